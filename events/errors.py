"""Errors of the event log. `EventLogError` is the root; adapters translate NATS errors to these."""

from __future__ import annotations

from taskset.errors import FleetbusError


class EventLogError(FleetbusError):
    """Root of every error raised by `events`."""


class ConcurrencyConflict(EventLogError):
    """An append expected the aggregate at one version, but the log holds a newer one."""

    def __init__(self, subject: str, expected: int | None, detail: str = "") -> None:
        self.subject = subject
        self.expected = expected
        super().__init__(
            f"concurrent change to {subject}: expected last sequence {expected}"
            + (f" ({detail})" if detail else "")
        )


class UndecodableEvent(EventLogError):
    """Bytes on the log that are not a valid event of this catalog."""

    def __init__(self, reason: str, seq: int | None = None, subject: str = "") -> None:
        self.reason = reason
        self.seq = seq
        self.subject = subject
        where = f"message {seq}" if seq is not None else "message"
        if subject:
            where += f" on {subject}"
        super().__init__(f"{where} is not a valid event: {reason}")


class EventLogUnavailable(EventLogError):
    """The log could not be reached (after bounded retries)."""


class TooManyResults(EventLogUnavailable):
    """A batched direct get matched more messages than the server answers in one reply
    (status 413): ask again for fewer subjects."""


class AppendRefused(EventLogError):
    """The server refused an append for a reason other than a concurrency conflict."""


class PayloadTooLarge(AppendRefused):
    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size:,} bytes, over the limit of {limit:,} bytes")
