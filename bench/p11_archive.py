"""P11 — EVENTS retention: archiving throughput, and `fleetbus events` across archive and live log.

The log of P10 (1,000 clusters, 20 tasksets, then ClusterTask decisions), 200,000 events, on
a hub whose EVENTS may be purged. A snapshot covers the whole log (purges wait for one). One
archiving pass with a window of the newest `KEEP` events then cuts everything older into
segments of up to 10,000 events, writes, reads back and verifies each, records it in the live
log and purges EVENTS up to the snapshot: archive throughput is events archived per second of
that pass. Reads replay the whole log in order, as `fleetbus events` and a full fold do: once
before archiving (all live), then across archive and live log, the first time with nothing
cached (every segment fetched, checked against its hash, decompressed) and again with the
segments cached. Every read is checked to return every sequence once, in order.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubs import throwaway_hub
from bench.p10_snapshots import append_all, fill, fleet
from bench.summary import median
from events.archive_store import CACHE_BYTES, ArchiveStore, forget_segments
from events.archive_verify import verify_trail
from events.retention import RetentionPolicy
from events.store import EventStore
from events.streams import EVENTS_STREAM, REPORTS_STREAM
from scheduler.snapshot_retention import EventsArchiver
from scheduler.snapshot_store import SnapshotTaker

KEY = "P11"
TITLE = "EVENTS retention: archive throughput and reads across archive and live log"
TARGETS: list[Target] = []
KEEP = 10_000
AGGREGATE = "fleet.evt.cluster.edge-7"
"""An aggregate whose whole history is archived: `edge-7`'s registration, event 8."""
AGGREGATE_SEQ = 8


async def read_all(store: EventStore) -> tuple[float, int]:
    """Seconds to replay the whole log, and how many events it read (checked in order)."""
    started = time.perf_counter()
    expected = 1
    async for stored in store.read(skip_undecodable=True):
        if stored.seq != expected:
            raise RuntimeError(f"the replay read {stored.seq} where {expected} was due")
        expected += 1
    return time.perf_counter() - started, expected - 1


async def run(mode: Mode) -> FigureResult:
    now = datetime.now(UTC)
    size = 50_000 if mode.quick else 200_000
    runs: dict[str, list[float]] = {"live": [], "cold": [], "warm": [], "one": []}
    async with throwaway_hub() as hub:
        store = await hub.store(retention=True)
        try:
            start = fleet(now)
            await append_all(store, start)
            await fill(store, size - len(start), 0, now)
            held = await store.last_sequence()
            live_bytes = int((await store.stream_info(EVENTS_STREAM))["state"]["bytes"])
            for _ in range(mode.repeats):
                seconds, count = await read_all(store)
                runs["live"].append(count / seconds)
            taken = await SnapshotTaker(store, store.on_stream(REPORTS_STREAM), None).take(
                datetime.now(UTC)
            )
            if taken is None:
                raise RuntimeError("no snapshot of a full log")
            archiver = EventsArchiver(store, RetentionPolicy(max_events=KEEP), purge_grace_s=0)
            started = time.perf_counter()
            done = await archiver.archive_once()
            archive_s = time.perf_counter() - started
            archived = sum(h.events for h in done.written)
            if done.purged_to < held - KEEP:
                raise RuntimeError(f"purged to {done.purged_to}, expected {held - KEEP}")
            segments = await ArchiveStore(store.api).listing()
            stored_bytes = sum(h.stored_bytes for h in segments)
            raw_bytes = sum(h.raw_bytes for h in segments)
            for repeat in range(mode.repeats):
                if repeat == 0:
                    seconds, count = await read_all(store)
                    runs["cold"].append(count / seconds)
                seconds, count = await read_all(store)
                runs["warm"].append(count / seconds)
            for _ in range(mode.repeats):
                started = time.perf_counter()
                history = [s async for s in store.read(subject=AGGREGATE)]
                runs["one"].append(time.perf_counter() - started)
                if [s.seq for s in history] != [AGGREGATE_SEQ]:
                    raise RuntimeError(f"{AGGREGATE}: read {[s.seq for s in history]}")
            forget_segments()
            started = time.perf_counter()
            history = [s async for s in store.read(subject=AGGREGATE)]
            one_cold_s = time.perf_counter() - started
            verify_started = time.perf_counter()
            report = await verify_trail(store)
            verify_s = time.perf_counter() - verify_started
            if not report.ok:
                raise RuntimeError(f"the trail does not verify: {report.broken}")
        finally:
            await store.close()

    metrics = [
        Metric(
            key="archive_per_s",
            label=f"archiving: {archived:,} events cut, written, verified, recorded and purged",
            unit="events/s",
            value=archived / archive_s,
            better="higher",
        ),
        Metric(
            key="read_live_per_s",
            label=f"replay of {held:,} events, all in the live log",
            unit="events/s",
            value=median(runs["live"]),
            better="higher",
            runs=runs["live"],
        ),
        Metric(
            key="read_archived_cold_per_s",
            label=f"the same replay across archive ({archived:,}) and live log, nothing cached",
            unit="events/s",
            value=median(runs["cold"]),
            better="higher",
            runs=runs["cold"],
        ),
        Metric(
            key="read_archived_per_s",
            label=f"the same replay again (the process keeps {CACHE_BYTES >> 20} MB of the "
            f"{raw_bytes / 1e6:,.0f} MB of decoded segments)",
            unit="events/s",
            value=median(runs["warm"]),
            better="higher",
            runs=runs["warm"],
        ),
        Metric(
            key="aggregate_read_s",
            label=f"one aggregate's history ({AGGREGATE}, archived) after those replays",
            unit="s",
            value=median(runs["one"]),
            runs=runs["one"],
        ),
        Metric(
            key="aggregate_read_cold_s",
            label="the same in a process that has read no segment yet "
            "(each subject index, one segment)",
            unit="s",
            value=one_cold_s,
        ),
        Metric(
            key="verify_s",
            label=f"`events verify` of {len(segments)} segments and the live log",
            unit="s",
            value=verify_s,
        ),
        Metric(
            key="archive_compression",
            label=f"archive size / events' size ({raw_bytes / 1e6:,.1f} MB in "
            f"{stored_bytes / 1e6:,.1f} MB; EVENTS held {live_bytes / 1e6:,.1f} MB)",
            unit="x",
            value=stored_bytes / raw_bytes if raw_bytes else None,
        ),
    ]
    method = (
        "One hub nats-server (the hub's own config, file storage) and one client process on "
        f"the same machine. The log of P10 to {held:,} events; a snapshot of all of it; one "
        f"archiving pass keeping the newest {KEEP:,} events (segments of up to 10,000 events, "
        "zlib level 6). Replays of the whole log in stream order, each checked to read every "
        f"sequence once: {mode.repeats} before archiving, one with nothing cached and "
        f"{mode.repeats} more after it."
        + (" Quick mode: the log is 50,000 events." if mode.quick else "")
    )
    notes = [
        "A replay across the archive fetches each segment (one message, a direct get), checks "
        "its SHA-256 against its index, decompresses and decodes it, then goes on in the live "
        "log. A process keeps the decoded segments it read last (64 MB) and which subjects "
        "each segment holds; a later replay of more than that fetches most segments again. "
        "A read filtered on one aggregate reads each segment's subject index (a small "
        "message) and fetches only the segments holding it: here one segment of 10,000 "
        "events, decoded whole.",
        "The machine is shared: absolute rates move with its load.",
    ]
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra={"log_events": held, "archived_events": archived, "quick": mode.quick},
    )
