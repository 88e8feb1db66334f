"""The event log of fleetbus: the catalog of events, their subjects and streams, and the store.

Everything that happens in the fleet is one of the events in `events.catalog`, appended to the
JetStream log by `events.store.EventStore`. The store is put together from small modules:
`connection` (the client, header parsing, the transient errors and the one retrying request),
`stream_api` (a stream's API and administration), `appends`, `replay`, `replies` (the reply
multiplexer of pipelined writes), `pull` (continuous pulls from durable consumers) and `port`
(the named JetStream operations the scheduler and anti-entropy use instead of a connection).
"""
