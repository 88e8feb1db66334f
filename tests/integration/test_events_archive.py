"""The EVENTS retention window: events outside it are archived in hash-chained segments and
purged only once archived, recorded and covered by a snapshot; every read of the log (replays,
filters, `state --at`, a scheduler's restart) goes on across archive and live log; the trail
verifies end to end and tampering is found."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from events.archive_verify import verify_trail
from events.catalog import EventsArchived
from events.retention import RetentionPolicy
from events.store import EventStore, StoredEvent, connect
from events.streams import EVENTS_STREAM, hub_streams
from scheduler.snapshot_retention import EventsArchiver
from scheduler.snapshot_store import SnapshotStore
from scheduler.snapshots import state_digest
from tests.conftest import HubNats
from tests.integration.scheduler_harness import running_scheduler
from tests.integration.test_snapshots import answers, build_history, full_fold


@pytest.fixture
async def retained_store(hub_nats: HubNats) -> AsyncIterator[EventStore]:
    """The hub's streams as a hub with a retention window creates them."""
    nc = await connect(hub_nats.url, user="hub", password=hub_nats.password)
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

    archiver = EventsArchiver(store, RetentionPolicy(max_events=3), segment_events=4)
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
