"""Errors of the chart archive store.

They are `EventLogError`s, as they were when the store lived in `events`: to a caller, a
missing or corrupt archive is a problem of the hub's JetStream storage like any other.
"""

from __future__ import annotations

from events.errors import EventLogError


class ChartStoreError(EventLogError):
    """Root of the errors raised by `charts`."""


class ChartArchiveMissing(ChartStoreError):
    """No archive with this address is stored on the hub."""


class ChartArchiveCorrupt(ChartStoreError):
    """The stored bytes do not hash to the address they are stored under."""
