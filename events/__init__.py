"""The event log of fleetbus: the catalog of events, their subjects and streams, and the store.

Everything that happens in the fleet is one of the events in `events.catalog`, appended to the
JetStream log by `events.store.EventStore`.
"""
