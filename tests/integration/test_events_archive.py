"""The EVENTS retention window: events outside it are archived in hash-chained segments and
purged only once archived, recorded and covered by a snapshot; every read of the log (replays,
filters, `state --at`, a scheduler's restart) goes on across archive and live log; the trail
verifies end to end and tampering is found."""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from events.archive import ArchiveError, SegmentCorrupt, SegmentHeader, content_hash
from events.archive_store import ArchiveStore
from events.archive_verify import verify_trail
from events.catalog import EventsArchived, TasksetPublished
from events.errors import EventLogUnavailable
from events.ids import new_event_id
from events.port import JetStreamPort
from events.retention import RetentionPolicy
from events.sealed import EventSealer
from events.store import Append, EventStore, StoredEvent, connect
from events.streams import ARCHIVE_STREAM, EVENTS_STREAM, archive_stream, hub_streams
from events.subjects import archive_segment_subject
from scheduler.snapshot_retention import ArchivePass, EventsArchiver, RetentionUnavailable
from scheduler.snapshot_store import SnapshotStore, SnapshotTaker
from scheduler.snapshots import state_digest
from taskset.codec import decode_taskset
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.integration.scheduler_harness import FakeChartRenderer, reports_store, running_scheduler
from tests.integration.test_snapshots import answers, build_history, full_fold
from tests.scheduler_fixtures import make_taskset, published, registered


@pytest.fixture
async def retained_store(hub_nats: HubNats) -> AsyncIterator[EventStore]:
    """The hub's streams as a hub with a retention window creates them."""
    nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    store = EventStore(nc)
    await store.ensure_streams(hub_streams(retention=True))
    try:
        yield store
    finally:
        await store.close()


def keys(log: list[StoredEvent]) -> list[tuple[int, str, str]]:
    return [(s.seq, s.subject, s.event.id) for s in log]


async def everything(store: EventStore, **filters: object) -> list[StoredEvent]:
    return [s async for s in store.read(**filters)]  # type: ignore[arg-type]


async def first_seq(store: EventStore) -> int:
    return int((await store.stream_info(EVENTS_STREAM))["state"]["first_seq"])


async def test_archived_events_read_and_rebuild_as_before_the_purge(
    retained_store: EventStore,
) -> None:
    store = retained_store
    before, taken, after = await build_history(store)
    whole = await everything(store)
    end = whole[-1].seq
    expected_state = {
        (cluster, moment): await answers(store, cluster, moment, SnapshotStore(store))
        for cluster in ("a", "b", "c")
        for moment in (*before, *after)
    }

    archiver = EventsArchiver(
        store, RetentionPolicy(max_events=3), segment_events=4, purge_grace_s=0
    )
    done = await archiver.archive_once()

    assert len(done.written) >= 2
    assert [h.index for h in done.written] == list(range(1, len(done.written) + 1))
    assert done.written[0].from_seq == 1
    assert done.written[-1].to_seq == end - 3
    assert done.purged_to == taken.events_seq  # up to the snapshot, not the archive's end
    assert done.waiting_for_snapshot
    assert await first_seq(store) == taken.events_seq + 1

    # Every read goes on across archive and live log as if nothing had moved.
    assert keys(await everything(store)) == keys(whole) + [
        (s.seq, s.subject, s.event.id) for s in await everything(store, from_seq=end + 1)
    ]
    subject = "fleet.evt.cluster.b"
    assert keys(await everything(store, subject=subject)) == keys(
        [s for s in whole if s.subject == subject]
    )
    wildcard = [s for s in whole if s.subject.startswith("fleet.evt.taskset.")]
    assert keys(await everything(store, subject="fleet.evt.taskset.>")) == keys(wildcard)
    middle = whole[len(whole) // 3]
    assert keys(await everything(store, since=middle.stored_at, until=after[0])) == keys(
        [s for s in whole if middle.stored_at <= s.stored_at <= after[0]]
    )
    assert keys(await everything(store, from_seq=2))[: len(whole) - 1] == keys(whole[1:])
    followed: list[StoredEvent] = []
    following = store.follow(from_seq=1)
    async for stored in following:
        followed.append(stored)
        if len(followed) == len(whole):
            break
    await following.aclose()
    assert keys(followed) == keys(whole)

    # The live log records each segment by its hash.
    records = [s.event for s in await everything(store, subject="fleet.evt.archive.events")]
    assert [(r.segment, r.segment_hash) for r in records if isinstance(r, EventsArchived)] == [
        (h.index, h.hash) for h in done.written
    ]

    # `state --at` inside the archived range, and a scheduler's restart, as before.
    for (cluster, moment), expected in expected_state.items():
        assert await answers(store, cluster, moment, SnapshotStore(store)) == expected
    async with running_scheduler(store, snapshot_every=0) as service:
        assert service.started_from == taken.events_seq
        restarted = state_digest(service.state)
    assert restarted == state_digest(await full_fold(store))

    report = await verify_trail(store)
    assert report.ok, report.broken
    assert report.segments == len(done.written)
    assert report.archived_to == end - 3
    assert report.live_from == taken.events_seq + 1


async def fill(store: EventStore, count: int) -> list[StoredEvent]:
    """`count` cluster registrations, appended in one go; the whole log afterwards."""
    await store.append_many([Append([registered(f"c{n}")]) for n in range(count)])
    return await everything(store)


async def snapshot_now(store: EventStore) -> int:
    taken = await SnapshotTaker(store, await reports_store(store), FakeChartRenderer()).take(
        datetime.now(UTC)
    )
    assert taken is not None
    return taken.events_seq


def chained(segments: list[SegmentHeader]) -> bool:
    """Indexes 1..n, each segment starting right after the one before, from sequence 1."""
    starts = [1] + [h.to_seq + 1 for h in segments[:-1]]
    return [h.index for h in segments] == list(range(1, len(segments) + 1)) and [
        h.from_seq for h in segments
    ] == starts


def contiguous(log: list[StoredEvent]) -> bool:
    return [s.seq for s in log] == list(range(1, len(log) + 1))


async def test_a_hub_whose_events_deny_purges_refuses_a_retention_window(
    event_store: EventStore,
) -> None:
    archiver = EventsArchiver(event_store, RetentionPolicy(max_events=100))
    with pytest.raises(RetentionUnavailable, match=r"--events-retain: .* denies purges"):
        await archiver.archive_once()
    assert await ArchiveStore(event_store.api).listing() == []
    assert not await ArchiveStore(event_store.api).exists()  # nothing was created
    # Without a window the hub keeps creating EVENTS as before, so an existing one is kept.
    info = await event_store.stream_info(EVENTS_STREAM)
    assert info["config"]["deny_purge"] is True


async def test_tampering_with_a_segment_is_found_and_readers_refuse_it(
    retained_store: EventStore,
) -> None:
    store = retained_store
    await fill(store, 30)
    await snapshot_now(store)
    done = await EventsArchiver(
        store, RetentionPolicy(max_events=5), segment_events=8, purge_grace_s=0
    ).archive_once()
    assert len(done.written) == 4
    assert (await verify_trail(store)).ok

    # Someone with the archive's stream rewrites it: segment 2 changes one event, and its own
    # hash header is recomputed so the segment looks consistent on its own.
    port = JetStreamPort(store.api)
    stored = [
        await port.last_message(ARCHIVE_STREAM, archive_segment_subject(h.index))
        for h in done.written
    ]
    await store.api_request(f"STREAM.DELETE.{ARCHIVE_STREAM}")
    await store.ensure_stream(archive_stream())
    for index, reply in enumerate(stored, start=1):
        assert reply is not None
        headers = {k: v for k, v in reply.headers.items() if k.startswith("Fleetbus-")}
        payload = reply.data
        if index == 2:
            raw = zlib.decompress(payload).replace(b'"cluster":"c9"', b'"cluster":"cX"')
            payload = zlib.compress(raw)
            headers["Fleetbus-Segment-Hash"] = content_hash(raw)
        await store.nc.request(archive_segment_subject(index), payload, headers=headers, timeout=5)

    report = await verify_trail(store)
    assert report.broken is not None
    second = done.written[1]
    assert (report.broken.segment, report.broken.seq) == (2, second.from_seq)
    assert "segment 3 recorded" in report.broken.reason

    # Rewritten without fixing its hash, a reader refuses the segment instead of serving it.
    await store.api_request(f"STREAM.DELETE.{ARCHIVE_STREAM}")
    await store.ensure_stream(archive_stream())
    for index, reply in enumerate(stored, start=1):
        assert reply is not None
        headers = {k: v for k, v in reply.headers.items() if k.startswith("Fleetbus-")}
        payload = reply.data
        if index == 3:
            payload = zlib.compress(zlib.decompress(payload).replace(b"c17", b"c71"))
        await store.nc.request(archive_segment_subject(index), payload, headers=headers, timeout=5)
    report = await verify_trail(store)
    assert report.broken is not None
    assert (report.broken.segment, report.broken.seq) == (3, done.written[2].from_seq)
    with pytest.raises(SegmentCorrupt, match="archive segment 3"):
        await everything(store, subject="fleet.evt.cluster.c17")


class StopsAfter(EventsArchiver):
    """An archiver that dies at one step, the first time it reaches it."""

    def __init__(self, store: EventStore, step: str) -> None:
        super().__init__(store, RetentionPolicy(max_events=5), segment_events=8, purge_grace_s=0)
        self.step = step

    async def _record(self, header: SegmentHeader, *, expected: int) -> None:
        if self.step == "write" and header.index == 2:
            raise EventLogUnavailable("killed after writing segment 2")
        await super()._record(header, expected=expected)

    async def _purge(self, tail: SegmentHeader, settled: int, first: int) -> tuple[int, bool]:
        if self.step == "record":
            raise EventLogUnavailable("killed before purging")
        return await super()._purge(tail, settled, first)


@pytest.mark.parametrize("step", ["write", "record"])
async def test_an_archiver_stopped_between_steps_leaves_no_gap_and_no_duplicate(
    retained_store: EventStore, step: str
) -> None:
    store = retained_store
    whole = await fill(store, 30)
    covered = await snapshot_now(store)
    with pytest.raises(EventLogUnavailable, match="killed"):
        await StopsAfter(store, step).archive_once()
    # Nothing left the live log, and every event reads once.
    assert await first_seq(store) == 1
    assert keys(await everything(store))[: len(whole)] == keys(whole)

    done = await EventsArchiver(
        store, RetentionPolicy(max_events=5), segment_events=8, purge_grace_s=0
    ).archive_once()
    segments = await ArchiveStore(store.api).listing()
    assert chained(segments)
    assert [h.from_seq for h in segments][:4] == [1, 9, 17, 25]
    if step == "write":
        assert done.linked == 2  # recorded late, before anything else
    assert done.purged_to == min(covered, segments[-1].to_seq)
    assert await first_seq(store) == done.purged_to + 1
    after = await everything(store)
    assert contiguous(after)
    assert keys(after)[: len(whole)] == keys(whole)
    records = [s.event for s in after if isinstance(s.event, EventsArchived)]
    # Each segment recorded exactly once.
    assert sorted(r.segment for r in records) == [h.index for h in segments]
    assert (await verify_trail(store)).ok


KILLED_ARCHIVER = """
import asyncio, sys
from events.retention import RetentionPolicy
from events.store import EventStore, connect
from scheduler.snapshot_retention import EventsArchiver

async def main() -> None:
    nc = await connect(sys.argv[1], credentials=sys.argv[2])
    archiver = EventsArchiver(EventStore(nc), RetentionPolicy(max_events=5), segment_events=1)
    await archiver.archive_once()

asyncio.run(main())
"""


async def test_an_archiver_process_killed_mid_pass_is_continued_by_the_next(
    retained_store: EventStore, hub_nats: HubNats
) -> None:
    store = retained_store
    whole = await fill(store, 400)
    covered = await snapshot_now(store)
    archive = ArchiveStore(store.api)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_ARCHIVER,
        hub_nats.url,
        str(hub_nats.credentials),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(
            lambda: _segments_at_least(archive, 20), what="the archiver's first segments"
        )
    finally:
        process.kill()
        await asyncio.wait_for(process.wait(), 10)
    killed_at = len(await archive.listing())
    assert killed_at < 395  # killed mid-pass, not after it

    done = await EventsArchiver(
        store, RetentionPolicy(max_events=5), segment_events=50, purge_grace_s=0
    ).archive_once()
    segments = await archive.listing()
    assert chained(segments)
    assert len(segments) > killed_at
    assert done.purged_to == min(covered, segments[-1].to_seq)
    after = await everything(store)
    assert contiguous(after)
    assert keys(after)[: len(whole)] == keys(whole)
    records = [s.event for s in after if isinstance(s.event, EventsArchived)]
    assert sorted(r.segment for r in records) == [h.index for h in segments]
    report = await verify_trail(store)
    assert report.ok, report.broken
    assert report.archived_to == segments[-1].to_seq


async def _segments_at_least(archive: ArchiveStore, count: int) -> bool:
    return len(await archive.listing()) >= count


async def test_events_a_durable_consumer_has_not_acknowledged_stay_live(
    retained_store: EventStore,
) -> None:
    store = retained_store
    await fill(store, 30)
    covered = await snapshot_now(store)
    port = JetStreamPort(store.api)
    await port.ensure_durable(
        EVENTS_STREAM, "notify-audit-events", start_seq=1, ack_wait=30, max_ack_pending=100
    )
    archiver = EventsArchiver(
        store, RetentionPolicy(max_events=5), segment_events=8, purge_grace_s=0
    )
    done = await archiver.archive_once()
    assert done.written
    assert done.purged_to == 0
    assert await first_seq(store) == 1

    # Once it has read and acknowledged up to 12, the purge may go that far.
    reader = await store.api.js.pull_subscribe_bind("notify-audit-events", stream=EVENTS_STREAM)
    for msg in await reader.fetch(12, timeout=5):
        await msg.ack_sync()
    await reader.unsubscribe()
    done = await archiver.archive_once()
    assert done.purged_to == 12
    assert await first_seq(store) == 13
    assert covered > 12


async def test_a_read_goes_on_in_the_archive_when_events_left_the_live_log_meanwhile(
    retained_store: EventStore,
) -> None:
    store = retained_store
    whole = await fill(store, 40)
    await snapshot_now(store)
    await EventsArchiver(
        store, RetentionPolicy(max_events=30), segment_events=4, purge_grace_s=0
    ).archive_once()
    assert await first_seq(store) == 11

    # A replay that has listed the archive and read its first event...
    reading = store.read()
    read = [await anext(reading)]
    # ...while the archiver archives and purges more of the live log.
    moved = await EventsArchiver(
        store, RetentionPolicy(max_events=5), segment_events=4, purge_grace_s=0
    ).archive_once()
    assert moved.purged_to > 11
    read += [stored async for stored in reading]
    assert keys(read)[: len(whole)] == keys(whole)
    assert contiguous(read)


async def test_a_segment_leaves_the_live_log_a_grace_period_after_it_was_written(
    retained_store: EventStore,
) -> None:
    store = retained_store
    await fill(store, 30)
    await snapshot_now(store)
    archiver = EventsArchiver(store, RetentionPolicy(max_events=5), segment_events=8)
    assert archiver.purge_grace_s == 30
    done = await archiver.archive_once()
    assert done.written
    assert done.purged_to == 0
    assert await first_seq(store) == 1
    # Segments an earlier process wrote have waited long enough.
    later = await EventsArchiver(store, RetentionPolicy(max_events=5)).archive_once()
    assert later.purged_to == done.written[-1].to_seq


async def test_secrets_stay_sealed_in_the_archive(
    retained_store: EventStore, hub_nats: HubNats
) -> None:
    store = retained_store
    store.sealer = EventSealer(hub_nats.data.keyring())
    planted = "archived-planted-" + new_event_id()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "apps"},
        "stringData": {"password": planted},
    }
    await store.append([published(make_taskset("vault", secret), 1, clusters=["c1"])])
    await fill(store, 20)
    await snapshot_now(store)
    done = await EventsArchiver(
        store, RetentionPolicy(max_events=5), segment_events=8, purge_grace_s=0
    ).archive_once()
    assert done.purged_to > 1
    archive = ArchiveStore(store.api)
    archived = [
        message
        for header in await archive.listing()
        for message in (await archive.body(header)).messages
        if message.subject == "fleet.evt.taskset.vault"
    ]
    assert len(archived) == 1  # the event is in the archive...
    assert await first_seq(store) > archived[0].seq  # ...and no longer live
    (stored,) = await everything(store, subject="fleet.evt.taskset.vault")
    for event in (store.decoder.decode(archived[0].data), stored.event):
        assert isinstance(event, TasksetPublished)
        (step,) = decode_taskset(event.body).install
        password = step.object["stringData"]["password"]
        assert password.startswith("fbsealed:v1:")
        assert planted not in password


async def test_the_age_and_bytes_limits_archive_what_falls_outside_them(
    retained_store: EventStore,
) -> None:
    store = retained_store
    whole = await fill(store, 40)
    await snapshot_now(store)
    cutoff = whole[15].stored_at
    older = [s.seq for s in whole if s.stored_at < cutoff]
    by_age = await EventsArchiver(
        store,
        RetentionPolicy(max_age=timedelta(hours=1)),
        clock=lambda: cutoff + timedelta(hours=1),
        purge_grace_s=0,
    ).archive_once()
    assert by_age.written[-1].to_seq == older[-1]
    assert await first_seq(store) == older[-1] + 1

    info = (await store.stream_info(EVENTS_STREAM))["state"]
    budget = int(info["bytes"]) // 2
    by_bytes = await EventsArchiver(
        store, RetentionPolicy(max_bytes=budget), purge_grace_s=0
    ).archive_once()
    assert by_bytes.written
    left = int((await store.stream_info(EVENTS_STREAM))["state"]["bytes"])
    assert left <= budget + 400  # within one event and the records appended meanwhile
    assert left >= budget // 2
    assert contiguous(await everything(store))


async def test_two_archivers_at_once_write_one_chain_and_record_each_segment_once(
    retained_store: EventStore,
) -> None:
    store = retained_store
    whole = await fill(store, 60)
    await snapshot_now(store)

    def archiver() -> EventsArchiver:
        return EventsArchiver(
            store, RetentionPolicy(max_events=5), segment_events=4, purge_grace_s=0
        )

    outcomes = await asyncio.gather(
        archiver().archive_once(), archiver().archive_once(), return_exceptions=True
    )
    for outcome in outcomes:
        assert isinstance(outcome, ArchivePass | ArchiveError), outcome
    await archiver().archive_once()
    segments = await ArchiveStore(store.api).listing()
    assert chained(segments)
    after = await everything(store)
    assert contiguous(after)
    assert keys(after)[: len(whole)] == keys(whole)
    records = [s.event for s in after if isinstance(s.event, EventsArchived)]
    assert sorted(r.segment for r in records) == [h.index for h in segments]
    assert (await verify_trail(store)).ok
