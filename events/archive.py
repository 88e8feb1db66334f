"""Archive segments of the event log: their format, their hashes, and the chain that binds them.

When EVENTS keeps only a retention window, the events that leave it are first written into
immutable **segments**: each a contiguous range of stream sequences (`from_seq`..`to_seq`),
the messages in it exactly as the log held them (subject, storage time, headers, bytes: sealed
secrets stay sealed), the index of the segment and the hash of the segment before it. The
segment's hash is the SHA-256 of that encoded body, so it covers the previous hash too: the
segments form a chain, and changing any byte of any segment breaks every link after it. The
archiver then appends `EventsArchived` (holding the segment's hash) to the live log, which
binds the live log to the newest segment; the next segment archives that event in turn.

A segment is stored zlib-compressed as one message (see `events.archive_store`), with its
range, times and hashes repeated in headers so a listing needs no bodies. Headers are only an
index: `verify_segment` recomputes everything from the body, and `ChainVerifier` checks, in
order, that each segment decodes, matches its headers, follows the previous one without a gap
or overlap, and carries the previous one's hash; that every `EventsArchived` (in a segment or
in the live log) names the hash the archive holds; and that the live log starts where the
archive ends. It names the first segment and sequence where the trail breaks.

This module is pure (bytes in, values out); reading and writing segments is
`events.archive_store`.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from events.catalog import EventsArchived
from events.codec import EventDecoder
from events.errors import EventLogError, UndecodableEvent
from events.subjects import ARCHIVE_EVENTS_SUBJECT

SEGMENT_FORMAT = 1
GENESIS_HASH = "sha256:" + "0" * 64
"""The `prev_hash` of the first segment."""
SEGMENT_MAX_EVENTS = 10_000
"""Events in one segment at most."""
SEGMENT_MAX_RAW_BYTES = 4 * 1024 * 1024
"""Uncompressed bytes of one segment's events at most (a single larger event gets a segment
of its own): the compressed segment is one message under the hub's 8 MB `max_payload`."""

H_INDEX = "Fleetbus-Segment-Index"
H_FROM = "Fleetbus-Segment-From"
H_TO = "Fleetbus-Segment-To"
H_FIRST_TIME = "Fleetbus-Segment-First-Time"
H_LAST_TIME = "Fleetbus-Segment-Last-Time"
H_COUNT = "Fleetbus-Segment-Events"
H_RAW_BYTES = "Fleetbus-Segment-Raw-Bytes"
H_HASH = "Fleetbus-Segment-Hash"
H_PREV_HASH = "Fleetbus-Segment-Prev-Hash"


class ArchiveError(EventLogError):
    """The archive cannot be read or does not verify."""


class SegmentCorrupt(ArchiveError):
    """A segment's bytes do not decode or do not match its hash and headers."""

    def __init__(self, index: int, from_seq: int, reason: str) -> None:
        self.index = index
        self.from_seq = from_seq
        self.reason = reason
        super().__init__(f"archive segment {index} (from sequence {from_seq}): {reason}")


class ArchivedMessage(msgspec.Struct, frozen=True, array_like=True):
    """One message of the log as it was stored: sequence, subject, storage time (µs since the
    epoch, as readers see it), its own headers and its bytes."""

    seq: int
    subject: str
    stored_us: int
    data: bytes
    headers: dict[str, str] | None = None

    @property
    def stored_at(self) -> datetime:
        seconds, micros = divmod(self.stored_us, 1_000_000)
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def micros_of(moment: datetime) -> int:
    """`moment` as whole µs since the epoch (exact: no float on the way)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class SegmentBody(msgspec.Struct, frozen=True, kw_only=True):
    """What a segment's hash covers."""

    format: int = SEGMENT_FORMAT
    index: int
    from_seq: int
    to_seq: int
    prev_hash: str
    messages: list[ArchivedMessage]


_ENCODER = msgspec.msgpack.Encoder()
_BODY_DECODER = msgspec.msgpack.Decoder(SegmentBody)


def content_hash(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class SegmentHeader:
    """A segment's index entry: what its message headers say about it."""

    index: int
    from_seq: int
    to_seq: int
    first_time: datetime | None
    last_time: datetime | None
    events: int
    raw_bytes: int
    hash: str
    prev_hash: str
    stored_bytes: int = 0

    def headers(self) -> dict[str, str]:
        return {
            H_INDEX: str(self.index),
            H_FROM: str(self.from_seq),
            H_TO: str(self.to_seq),
            H_FIRST_TIME: self.first_time.isoformat() if self.first_time else "",
            H_LAST_TIME: self.last_time.isoformat() if self.last_time else "",
            H_COUNT: str(self.events),
            H_RAW_BYTES: str(self.raw_bytes),
            H_HASH: self.hash,
            H_PREV_HASH: self.prev_hash,
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], stored_bytes: int = 0) -> SegmentHeader:
        try:
            first = headers.get(H_FIRST_TIME, "")
            last = headers.get(H_LAST_TIME, "")
            return cls(
                index=int(headers[H_INDEX]),
                from_seq=int(headers[H_FROM]),
                to_seq=int(headers[H_TO]),
                first_time=datetime.fromisoformat(first) if first else None,
                last_time=datetime.fromisoformat(last) if last else None,
                events=int(headers[H_COUNT]),
                raw_bytes=int(headers[H_RAW_BYTES]),
                hash=headers[H_HASH],
                prev_hash=headers[H_PREV_HASH],
                stored_bytes=stored_bytes,
            )
        except (KeyError, ValueError) as e:
            index = headers.get(H_INDEX, "?")
            raise ArchiveError(f"archive segment {index}: unreadable index headers ({e})") from e

    def to_json(self) -> dict[str, object]:
        return {
            "segment": self.index,
            "fromSequence": self.from_seq,
            "toSequence": self.to_seq,
            "firstTime": self.first_time.isoformat() if self.first_time else None,
            "lastTime": self.last_time.isoformat() if self.last_time else None,
            "events": self.events,
            "rawBytes": self.raw_bytes,
            "storedBytes": self.stored_bytes,
            "hash": self.hash,
            "previousHash": self.prev_hash,
        }


@dataclass(frozen=True)
class EncodedSegment:
    header: SegmentHeader
    payload: bytes
    """The zlib-compressed body: what the archive stores."""


def encode_segment(
    index: int, from_seq: int, to_seq: int, prev_hash: str, messages: list[ArchivedMessage]
) -> EncodedSegment:
    """The segment of `messages` (sequences within `from_seq`..`to_seq`, ascending)."""
    if from_seq > to_seq or any(not from_seq <= m.seq <= to_seq for m in messages):
        raise ValueError(f"segment {index}: messages outside {from_seq}..{to_seq}")
    body = SegmentBody(
        index=index, from_seq=from_seq, to_seq=to_seq, prev_hash=prev_hash, messages=messages
    )
    raw = _ENCODER.encode(body)
    payload = zlib.compress(raw, 6)
    header = SegmentHeader(
        index=index,
        from_seq=from_seq,
        to_seq=to_seq,
        first_time=messages[0].stored_at if messages else None,
        last_time=messages[-1].stored_at if messages else None,
        events=len(messages),
        raw_bytes=len(raw),
        hash=content_hash(raw),
        prev_hash=prev_hash,
        stored_bytes=len(payload),
    )
    return EncodedSegment(header, payload)


def decode_segment(header: SegmentHeader, payload: bytes) -> SegmentBody:
    """The body of a stored segment, checked against its own hash header and index fields."""

    def fail(reason: str) -> SegmentCorrupt:
        return SegmentCorrupt(header.index, header.from_seq, reason)

    try:
        raw = zlib.decompress(payload)
    except zlib.error as e:
        raise fail(f"does not decompress ({e})") from e
    digest = content_hash(raw)
    if digest != header.hash:
        raise fail(f"its content hashes to {digest}, not the {header.hash} it was stored with")
    try:
        body = _BODY_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise fail(f"does not decode ({e})") from e
    if body.format != SEGMENT_FORMAT:
        raise fail(f"format {body.format} is not one this build reads ({SEGMENT_FORMAT})")
    said = (header.index, header.from_seq, header.to_seq, header.prev_hash, header.events)
    holds = (body.index, body.from_seq, body.to_seq, body.prev_hash, len(body.messages))
    if said != holds:
        raise fail(
            f"its headers say {said} (index, range, previous hash, events), its body {holds}"
        )
    previous = body.from_seq - 1
    for message in body.messages:
        if not previous < message.seq <= body.to_seq:
            raise fail(f"message {message.seq} is out of order or outside its range")
        previous = message.seq
    return body


_SUBJECTS_DECODER = msgspec.msgpack.Decoder(list[str])


def encode_subject_index(subjects: frozenset[str]) -> bytes:
    """A segment's subject index (sorted subjects, msgpack, zlib)."""
    return zlib.compress(_ENCODER.encode(sorted(subjects)), 6)


def decode_subject_index(payload: bytes) -> frozenset[str] | None:
    """The subjects of an index, None when it does not decode."""
    try:
        return frozenset(_SUBJECTS_DECODER.decode(zlib.decompress(payload)))
    except (zlib.error, msgspec.DecodeError, msgspec.ValidationError):
        return None


def subjects_of(body: SegmentBody) -> frozenset[str]:
    return frozenset(message.subject for message in body.messages)


def segment_cut(
    pending: Iterable[tuple[int, int]],
    *,
    max_events: int = SEGMENT_MAX_EVENTS,
    max_raw_bytes: int = SEGMENT_MAX_RAW_BYTES,
) -> int:
    """How many of `pending` (seq, bytes) messages the next segment takes: up to `max_events`
    and `max_raw_bytes`, at least one."""
    taken = 0
    size = 0
    for _, nbytes in pending:
        if taken and (taken >= max_events or size + nbytes > max_raw_bytes):
            break
        taken += 1
        size += nbytes
    return taken


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokenLink:
    """Where the trail first fails to verify: the segment (0 for the live log) and the first
    sequence affected."""

    segment: int
    seq: int
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"segment": self.segment, "sequence": self.seq, "reason": self.reason}


@dataclass
class ChainReport:
    segments: int = 0
    archived_events: int = 0
    archived_to: int = 0
    live_from: int = 0
    live_to: int = 0
    tail_hash: str = GENESIS_HASH
    broken: BrokenLink | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "segments": self.segments,
            "archivedEvents": self.archived_events,
            "archivedTo": self.archived_to,
            "liveFrom": self.live_from,
            "liveTo": self.live_to,
            "tailHash": self.tail_hash,
            "broken": self.broken.to_json() if self.broken else None,
        }


@dataclass
class ChainVerifier:
    """Checks segments in order as they are fed, then the live log's link to the last one."""

    decoder: EventDecoder = field(default_factory=EventDecoder)
    report: ChainReport = field(default_factory=ChainReport)
    hashes: dict[int, str] = field(default_factory=dict)
    """Segment index -> the hash its body has."""
    claims: list[tuple[int, int, str]] = field(default_factory=list)
    """(seq of the EventsArchived, segment it names, hash it records)."""
    _previous: SegmentHeader | None = None

    def _break(self, segment: int, seq: int, reason: str) -> None:
        if self.report.broken is None:
            self.report.broken = BrokenLink(segment, seq, reason)

    def add(
        self,
        header: SegmentHeader,
        payload: bytes | None,
        index: frozenset[str] | None = None,
    ) -> None:
        """Check the next segment (`payload` None: its message is missing) and its subject
        index, when there is one (`index`): an index that leaves out a subject would hide
        that subject's events from filtered reads."""
        if self.report.broken is not None:
            return
        previous = self._previous
        expected_index = previous.index + 1 if previous else 1
        expected_from = previous.to_seq + 1 if previous else 1
        if header.index != expected_index:
            self._break(header.index, header.from_seq, f"segment {expected_index} is missing")
            return
        if header.from_seq != expected_from:
            what = "gap" if header.from_seq > expected_from else "overlap"
            self._break(
                header.index,
                min(header.from_seq, expected_from),
                f"a {what}: it starts at sequence {header.from_seq}, the archive before it "
                f"ends at {expected_from - 1}",
            )
            return
        if payload is None:
            self._break(header.index, header.from_seq, "its message is missing")
            return
        try:
            body = decode_segment(header, payload)
        except SegmentCorrupt as e:
            self._break(header.index, header.from_seq, e.reason)
            return
        prev_hash = previous.hash if previous else GENESIS_HASH
        if body.prev_hash != prev_hash:
            # The segment before changed since this one was written (or this one names a
            # chain that never was): the earlier segment is where the trail breaks.
            if previous is None:
                self._break(
                    header.index,
                    header.from_seq,
                    f"the first segment records {body.prev_hash} as a previous hash",
                )
            else:
                self._break(
                    previous.index,
                    previous.from_seq,
                    f"it hashes to {prev_hash}, but segment {header.index} recorded "
                    f"{body.prev_hash} for it",
                )
            return
        if index is not None and index != subjects_of(body):
            self._break(
                header.index,
                header.from_seq,
                "its subject index does not list the subjects of its events",
            )
            return
        for message in body.messages:
            if message.subject == ARCHIVE_EVENTS_SUBJECT:
                self.note_claim(message.seq, message.data)
        self.hashes[header.index] = header.hash
        self._previous = header
        self.report.segments += 1
        self.report.archived_events += len(body.messages)
        self.report.archived_to = header.to_seq
        self.report.tail_hash = header.hash

    def note_claim(self, seq: int, data: bytes) -> None:
        """An `EventsArchived` at `seq` (in a segment or in the live log)."""
        try:
            event = self.decoder.decode(data, seq=seq, subject=ARCHIVE_EVENTS_SUBJECT)
        except UndecodableEvent as e:
            self._break(0, seq, f"the archive record at sequence {seq} is unreadable: {e}")
            return
        if isinstance(event, EventsArchived):
            self.claims.append((seq, event.segment, event.segment_hash))

    def finish(self, live_first: int, live_last: int, live_messages: int) -> ChainReport:
        """Check every `EventsArchived` against the segments, and the live log's start."""
        report = self.report
        report.live_from = live_first if live_messages else 0
        report.live_to = live_last
        if report.broken is not None:
            return report
        for seq, segment, recorded in sorted(self.claims):
            held = self.hashes.get(segment)
            if held is None:
                self._break(
                    segment,
                    seq,
                    f"EventsArchived at sequence {seq} names segment {segment}, "
                    "which the archive does not hold",
                )
                return report
            if held != recorded:
                self._break(
                    segment,
                    seq,
                    f"EventsArchived at sequence {seq} recorded hash {recorded} for segment "
                    f"{segment}, which hashes to {held} now",
                )
                return report
        if report.segments:
            tail = self._previous
            assert tail is not None
            if not any(segment == tail.index for _, segment, _ in self.claims):
                self._break(
                    tail.index,
                    tail.to_seq + 1,
                    f"no EventsArchived records segment {tail.index} yet: the link from the "
                    "live log to the archive is missing (the archiver adds it on its next pass)",
                )
                return report
            if live_messages and live_first > tail.to_seq + 1:
                self._break(
                    0,
                    tail.to_seq + 1,
                    f"events {tail.to_seq + 1}..{live_first - 1} are neither archived nor live",
                )
        elif live_messages and live_first > 1:
            self._break(0, 1, f"events 1..{live_first - 1} are neither archived nor live")
        return report
