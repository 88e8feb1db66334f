"""The EVENTS retention window: archive what leaves it, then purge it once a snapshot covers it.

A pass of `EventsArchiver`, in this order, each step safe to repeat after a crash:

1. **Link the tail.** The newest segment must be recorded in the live log by an
   `EventsArchived` event holding its hash. If it is not (the archiver stopped between writing
   the segment and recording it), the segment is read back, verified, and recorded now.
2. **Cut.** From the sequence after the newest segment, the live messages outside the window
   (`events.retention.WindowCut`) are cut into segments of up to `SEGMENT_MAX_EVENTS` events
   or `SEGMENT_MAX_RAW_BYTES` bytes. Each is written once under its index (one message: all or
   nothing), read back and verified against its hash, given its subject index (so filtered
   reads skip it unread), and recorded by `EventsArchived`, whose
   segment hash links it to the live log; the next segment carries its hash in turn.
3. **Purge.** Only what is archived, recorded and covered by a snapshot leaves EVENTS: the
   purge goes up to the smaller of the newest segment's last sequence and the newest usable
   snapshot's EVENTS sequence. A scheduler (re)starting from that snapshot folds only later
   events; anything earlier (`state --at` before it, an aggregate's whole history) is read
   from the archive by `events.replay`.

Killed between any two steps, the next pass continues where the last stopped: a segment is
written whole or not at all and never twice (its index is written once), a segment not yet
recorded is recorded before anything else, and nothing is purged that is not archived,
recorded and covered. Two archivers cannot both write one segment; the loser stops its pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from events.archive import (
    GENESIS_HASH,
    SEGMENT_MAX_EVENTS,
    SEGMENT_MAX_RAW_BYTES,
    ArchivedMessage,
    ArchiveError,
    SegmentBody,
    SegmentHeader,
    decode_segment,
    encode_segment,
    micros_of,
    subjects_of,
)
from events.archive_store import ArchiveStore, SegmentExists
from events.catalog import EventsArchived
from events.errors import ConcurrencyConflict, EventLogError, UndecodableEvent
from events.ids import new_event_id
from events.port import JetStreamPort
from events.retention import RetentionPolicy, WindowCut, message_size
from events.store import EventStore
from events.streams import EVENTS_STREAM
from events.subjects import ARCHIVE_EVENTS_SUBJECT
from scheduler.snapshot_store import SnapshotStore

log = logging.getLogger(__name__)

ARCHIVE_EVERY_S = 300.0
"""Seconds between two archiving passes (`fleetbus up --events-archive-every`)."""
ARCHIVER_ACTOR = "archiver"
PURGE_GRACE_S = 30.0
"""A segment this archiver wrote leaves the live log this long after it was written at the
earliest (at most one pass interval): a read that listed the archive just before the segment
existed finds its events still live when it goes on in the live log."""


class RetentionUnavailable(ArchiveError):
    """The hub's EVENTS stream cannot be purged, so no retention window can be kept."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ArchivePass:
    """What one pass did."""

    written: list[SegmentHeader] = field(default_factory=list)
    linked: int = 0
    """A segment recorded late (its archiver had stopped before recording it); 0: none."""
    purged_to: int = 0
    """EVENTS now starts after this sequence; 0: nothing purged."""
    waiting_for_snapshot: bool = False
    """Archived events stay live until a snapshot covers them."""


class EventsArchiver:
    """Keeps EVENTS within `policy`, archiving what leaves it (see the module docstring)."""

    def __init__(
        self,
        store: EventStore,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], datetime] = utc_now,
        every_s: float = ARCHIVE_EVERY_S,
        replicas: int = 1,
        segment_events: int = SEGMENT_MAX_EVENTS,
        segment_bytes: int = SEGMENT_MAX_RAW_BYTES,
        purge_grace_s: float | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.every_s = every_s
        self.archive = ArchiveStore(store.api, replicas=replicas)
        self.port = JetStreamPort(store.api)
        self.snapshots = SnapshotStore(store)
        self.segment_events = segment_events
        self.segment_bytes = segment_bytes
        self.purge_grace_s = min(PURGE_GRACE_S, every_s) if purge_grace_s is None else purge_grace_s
        self._written_at: dict[int, float] = {}
        """Segment index -> when this archiver wrote it (monotonic seconds)."""
        self._ready = False

    async def run(self, stop: asyncio.Event) -> None:
        """A pass every `every_s` seconds until `stop`; a failed pass is logged and retried."""
        while not stop.is_set():
            try:
                done = await self.archive_once()
            except RetentionUnavailable:
                raise
            except EventLogError as e:
                log.warning("archiving events failed, trying again later: %s", e)
            else:
                if done.written or done.purged_to:
                    log.info(
                        "archived events",
                        extra={
                            "segments": [h.index for h in done.written],
                            "purged_to": done.purged_to,
                        },
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every_s)

    async def check(self) -> None:
        """Refuse a hub whose EVENTS stream denies purges; create the archive's stream."""
        if self._ready:
            return
        info = await self.store.stream_info(EVENTS_STREAM)
        if info["config"].get("deny_purge"):
            raise RetentionUnavailable(
                "--events-retain: this hub's EVENTS stream was created without a retention "
                "window and denies purges (NATS never lifts deny_purge from an existing "
                "stream), so events could be archived but never leave it; run without "
                "--events-retain, or start a new hub with it"
            )
        await self.archive.ensure()
        self._ready = True

    async def archive_once(self) -> ArchivePass:
        await self.check()
        done = ArchivePass()
        segments = await self.archive.listing()
        tail = segments[-1] if segments else None
        if tail is not None and await self._link(tail):
            done.linked = tail.index
        info = await self.store.stream_info(EVENTS_STREAM)
        state = info["state"]
        first, last = int(state["first_seq"]), int(state["last_seq"])
        next_from = tail.to_seq + 1 if tail else 1
        if int(state["messages"]) and first > next_from:
            raise ArchiveError(
                f"EVENTS starts at {first} but the archive ends at {next_from - 1}: events "
                f"{next_from}..{first - 1} are neither archived nor live; not archiving more"
            )
        # Archived events still live (waiting for a snapshot) leave with the next purge: the
        # bytes limit counts only what is not archived yet.
        archived_live = sum(h.raw_bytes for h in segments if h.to_seq >= first)
        cut = WindowCut(
            self.policy,
            now=self.clock(),
            last_seq=last,
            live_bytes=int(state["bytes"]) - archived_live,
        )
        pending: list[ArchivedMessage] = []
        pending_bytes = 0
        reading = self.store.read_stored(from_seq=next_from, to_seq=last)
        if next_from > last:
            await reading.aclose()
            reading = _nothing()
        async with contextlib.aclosing(reading):
            async for batch in reading:
                for seq, subject, stored_at, data, headers in batch:
                    if not cut.outside(seq, stored_at, message_size(subject, data, headers)):
                        break
                    size = len(data) + len(subject)
                    if pending and (
                        len(pending) >= self.segment_events
                        or pending_bytes + size > self.segment_bytes
                    ):
                        tail = await self._seal(tail, pending)
                        done.written.append(tail)
                        pending, pending_bytes = [], 0
                    pending.append(
                        ArchivedMessage(seq, subject, micros_of(stored_at), data, headers)
                    )
                    pending_bytes += size
                if cut.closed:
                    break
        if pending:
            tail = await self._seal(tail, pending)
            done.written.append(tail)
        if tail is not None:
            settled = self._settled([*segments, *done.written])
            done.purged_to, done.waiting_for_snapshot = await self._purge(tail, settled, first)
        return done

    def _settled(self, segments: list[SegmentHeader]) -> int:
        """The last sequence of the segments written at least `purge_grace_s` ago (those an
        earlier process wrote count as settled)."""
        now = time.monotonic()
        settled = 0
        for header in segments:
            written = self._written_at.get(header.index)
            if written is not None and now - written < self.purge_grace_s:
                break
            settled = header.to_seq
        return settled

    async def _seal(
        self, previous: SegmentHeader | None, messages: list[ArchivedMessage]
    ) -> SegmentHeader:
        """Write, read back, verify and record the segment after `previous`."""
        segment = await asyncio.to_thread(
            encode_segment,
            previous.index + 1 if previous else 1,
            previous.to_seq + 1 if previous else 1,
            messages[-1].seq,
            previous.hash if previous else GENESIS_HASH,
            messages,
        )
        try:
            await self.archive.write(segment)
        except SegmentExists as e:
            raise ArchiveError(f"stopping this pass: {e}") from e
        self._written_at[segment.header.index] = time.monotonic()
        body = await self._verify_stored(segment.header)
        await self.archive.write_index(segment.header, subjects_of(body))
        await self._record_once(segment.header)
        return segment.header

    async def _verify_stored(self, header: SegmentHeader) -> SegmentBody:
        stored = await self.archive.stored_header(header.index)
        payload = await self.archive.payload(header)
        if stored is None or payload is None:
            raise ArchiveError(f"archive segment {header.index} is not readable after writing it")
        if stored.hash != header.hash:
            raise ArchiveError(
                f"archive segment {header.index} holds {stored.hash}, not {header.hash}"
            )
        return await asyncio.to_thread(decode_segment, stored, payload)

    async def _last_record(self) -> tuple[int, EventsArchived | None]:
        reply = await self.port.last_message(EVENTS_STREAM, ARCHIVE_EVENTS_SUBJECT)
        if reply is None:
            return 0, None
        seq = int(reply.headers.get("Nats-Sequence", "0"))
        try:
            event = self.store.decoder.decode(reply.data, seq=seq, subject=ARCHIVE_EVENTS_SUBJECT)
        except UndecodableEvent as e:
            raise ArchiveError(f"the last archive record is unreadable: {e}") from e
        return seq, event if isinstance(event, EventsArchived) else None

    async def _record_once(self, header: SegmentHeader) -> None:
        """Record `header` unless the live log records it (or a later segment) already."""
        seq, record = await self._last_record()
        if record is not None and record.segment >= header.index:
            if record.segment == header.index and record.segment_hash == header.hash:
                return
            raise ArchiveError(
                f"stopping this pass: another archiver recorded segment {record.segment}"
            )
        await self._record(header, expected=seq)

    async def _link(self, tail: SegmentHeader) -> bool:
        """Record `tail` if the live log does not yet; True when it had to."""
        seq, record = await self._last_record()
        if record is not None and record.segment >= tail.index:
            if record.segment == tail.index and record.segment_hash != tail.hash:
                raise ArchiveError(
                    f"archive segment {tail.index} hashes to {tail.hash}, but the live log "
                    f"recorded {record.segment_hash} for it (sequence {seq})"
                )
            return False
        body = await self._verify_stored(tail)
        await self.archive.write_index(tail, subjects_of(body))
        await self._record(tail, expected=seq)
        log.info("recorded archive segment %s, written by a pass that stopped early", tail.index)
        return True

    async def _record(self, header: SegmentHeader, *, expected: int) -> None:
        event = EventsArchived(
            id=new_event_id(),
            occurred_at=self.clock(),
            actor=ARCHIVER_ACTOR,
            segment=header.index,
            from_seq=header.from_seq,
            to_seq=header.to_seq,
            first_time=header.first_time,
            last_time=header.last_time,
            events=header.events,
            segment_hash=header.hash,
            previous_hash=header.prev_hash,
            raw_bytes=header.raw_bytes,
            stored_bytes=header.stored_bytes,
        )
        try:
            await self.store.append([event], expected=expected)
        except ConcurrencyConflict as e:
            # Another archiver recorded meanwhile: this segment (the same one, as both cut
            # the same range), or already later ones. Either way its pass goes on, not this.
            _, record = await self._last_record()
            if record is not None and record.segment == header.index:
                if record.segment_hash != header.hash:
                    raise ArchiveError(
                        f"another archiver recorded segment {header.index} with another hash"
                    ) from e
                return
            raise ArchiveError(
                f"stopping this pass: another archiver is recording segments ({e})"
            ) from e

    async def _slowest_durable(self) -> tuple[int, str]:
        """The last sequence every durable consumer of EVENTS has acknowledged (and the
        consumer that is furthest behind): a purge never takes what one still has to deliver,
        such as a notification whose webhook is failing."""
        floor, slowest = 2**63, ""
        offset = 0
        while True:
            page = await self.store.api_request(
                f"CONSUMER.LIST.{EVENTS_STREAM}", {"offset": offset}
            )
            consumers = page.get("consumers") or []
            for info in consumers:
                config = info.get("config", {})
                if not config.get("durable_name") or config.get("ack_policy") == "none":
                    continue
                if not info.get("num_pending") and not info.get("num_ack_pending"):
                    continue  # caught up: it needs nothing that is stored
                acknowledged = int(info.get("ack_floor", {}).get("stream_seq", 0))
                if acknowledged < floor:
                    floor, slowest = acknowledged, str(config["durable_name"])
            offset += len(consumers)
            if not consumers or offset >= int(page.get("total", 0)):
                return floor, slowest

    async def _purge(self, tail: SegmentHeader, settled: int, first: int) -> tuple[int, bool]:
        """Purge EVENTS up to what is archived (and `settled`), covered by a snapshot and
        acknowledged by every durable consumer: (purged up to, waiting for a snapshot)."""
        listing = await self.snapshots.listing()
        covered = max((s.events_seq for s in listing if s.usable), default=0)
        behind, consumer = await self._slowest_durable()
        upto = min(tail.to_seq, settled, covered, behind)
        waiting = covered < tail.to_seq
        if upto < first:
            if waiting:
                log.info(
                    "archived events stay in the live log until a snapshot covers them",
                    extra={"archived_to": tail.to_seq, "snapshot_covers": covered},
                )
            elif behind < tail.to_seq:
                log.info(
                    "archived events stay in the live log until durable consumer %s reads them",
                    consumer,
                    extra={"archived_to": tail.to_seq, "acknowledged_to": behind},
                )
            return 0, waiting
        await self.store.api_request(f"STREAM.PURGE.{EVENTS_STREAM}", {"seq": upto + 1})
        return upto, waiting


async def _nothing() -> AsyncGenerator[
    list[tuple[int, str, datetime, bytes, dict[str, str] | None]], None
]:
    return
    yield
