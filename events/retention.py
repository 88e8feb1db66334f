"""The retention window of EVENTS: which events the live log keeps, and which leave for the archive.

A policy names up to three limits, each optional: `age` (events stored longer ago than this
leave), `events` (only the newest N stay) and `bytes` (only the newest events up to this many
bytes stay). An event leaves the live log when it falls outside any limit given. No limit at
all is "keep everything", the default: nothing is archived and nothing purged.

Written as `--events-retain age=90d,events=5000000,bytes=20GiB` (any subset, any order).
Pure: `RetentionPolicy.parse` validates, `archive_boundary` decides from the stream's state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from taskset.errors import FleetbusError

SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_AGE = timedelta(minutes=1)
MIN_EVENTS = 100
MIN_BYTES = 1 << 20
_DURATION = re.compile(r"(\d+)(s|m|h|d)")
_SIZE = re.compile(r"(\d+)(B|KiB|MiB|GiB|TiB)?")
EXAMPLE = "age=90d,events=5000000,bytes=20GiB"


class RetentionInvalid(FleetbusError, ValueError):
    """A retention policy that cannot be used; the message names the part at fault."""


@dataclass(frozen=True)
class RetentionPolicy:
    max_age: timedelta | None = None
    max_events: int | None = None
    max_bytes: int | None = None

    @property
    def enabled(self) -> bool:
        return any(limit is not None for limit in (self.max_age, self.max_events, self.max_bytes))

    def describe(self) -> str:
        parts = []
        if self.max_age is not None:
            parts.append(f"age={int(self.max_age.total_seconds())}s")
        if self.max_events is not None:
            parts.append(f"events={self.max_events}")
        if self.max_bytes is not None:
            parts.append(f"bytes={self.max_bytes}")
        return ",".join(parts) or "keep everything"

    @classmethod
    def parse(cls, text: str) -> RetentionPolicy:
        """`age=D,events=N,bytes=S` (any subset); raises `RetentionInvalid` naming the part."""
        limits: dict[str, str] = {}
        for part in (p.strip() for p in text.split(",")):
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not value:
                raise RetentionInvalid(f"{part!r} is not a limit; write name=value, e.g. {EXAMPLE}")
            if name not in ("age", "events", "bytes"):
                raise RetentionInvalid(
                    f"unknown limit {name!r}; the limits are age, events and bytes ({EXAMPLE})"
                )
            if name in limits:
                raise RetentionInvalid(f"the limit {name} is given twice")
            limits[name] = value
        return cls(
            max_age=_age(limits["age"]) if "age" in limits else None,
            max_events=_events(limits["events"]) if "events" in limits else None,
            max_bytes=_bytes(limits["bytes"]) if "bytes" in limits else None,
        )


def _age(text: str) -> timedelta:
    match = _DURATION.fullmatch(text)
    if match is None:
        raise RetentionInvalid(f"age={text}: write a duration like 90d, 12h, 30m or 600s")
    age = timedelta(seconds=int(match[1]) * DURATION_UNITS[match[2]])
    if age < MIN_AGE:
        raise RetentionInvalid(f"age={text}: keep at least 1m of events in the live log")
    return age


def _events(text: str) -> int:
    if not text.isdigit():
        raise RetentionInvalid(f"events={text}: write a whole number of events, e.g. 5000000")
    count = int(text)
    if count < MIN_EVENTS:
        raise RetentionInvalid(f"events={text}: keep at least {MIN_EVENTS} events in the live log")
    return count


def _bytes(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise RetentionInvalid(
            f"bytes={text}: write a size like 20GiB or 512MiB (units B, KiB, MiB, GiB, TiB)"
        )
    size = int(match[1]) * SIZE_UNITS[match[2] or "B"]
    if size < MIN_BYTES:
        raise RetentionInvalid(f"bytes={text}: keep at least 1MiB of events in the live log")
    return size


class WindowCut:
    """Walks the live log oldest first and says which messages fall outside the window.

    Call `outside` for consecutive messages from the oldest on; the first that is inside ends
    the cut (every later message is newer and so inside too)."""

    def __init__(
        self, policy: RetentionPolicy, *, now: datetime, last_seq: int, live_bytes: int
    ) -> None:
        self.count_boundary = last_seq - policy.max_events if policy.max_events is not None else 0
        self.cutoff = now - policy.max_age if policy.max_age is not None else None
        self.excess = live_bytes - policy.max_bytes if policy.max_bytes is not None else 0
        self.last_seq = last_seq
        self.closed = not policy.enabled

    def outside(self, seq: int, stored_at: datetime, size: int) -> bool:
        if self.closed or seq > self.last_seq:
            return False
        old = self.cutoff is not None and stored_at < self.cutoff
        if not (seq <= self.count_boundary or old or self.excess > 0):
            self.closed = True
            return False
        self.excess -= size
        return True


def message_size(subject: str, data: bytes, headers: dict[str, str] | None) -> int:
    """About what the server counts for a stored message (subject, headers, body, and its
    sequence and timestamp)."""
    header_bytes = sum(len(k) + len(v) + 4 for k, v in (headers or {}).items())
    return len(subject) + header_bytes + len(data) + 16


def archive_boundary(
    policy: RetentionPolicy,
    *,
    now: datetime,
    last_seq: int,
    live_bytes: int,
    oldest_first: Iterable[tuple[int, datetime, int]],
) -> int:
    """The last sequence of `oldest_first` (seq, stored_at, size) outside the window, 0 when
    none is."""
    cut = WindowCut(policy, now=now, last_seq=last_seq, live_bytes=live_bytes)
    boundary = 0
    for seq, stored_at, size in oldest_first:
        if not cut.outside(seq, stored_at, size):
            break
        boundary = seq
    return boundary
