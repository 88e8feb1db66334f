"""Snapshots of the scheduler's fold: a restart and `state --at` from a snapshot plus the events
after it give exactly what a full replay gives; unreadable snapshots are skipped."""

from __future__ import annotations

import asyncio
import logging
import zlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pytest

from events.store import EventStore
from events.streams import REPORTS_STREAM, SNAPSHOTS_STREAM
from fleetbus.commands.state import state_document
from scheduler.history import desired_state_at
from scheduler.snapshot_store import (
    SnapshotInfo,
    SnapshotStore,
    SnapshotTaker,
    desired_state_from_log,
)
from scheduler.snapshots import ClusterHistory, SnapshotUnreadable, state_digest
from scheduler.state import SchedulerState
from tests.eventually import eventually
from tests.integration.scheduler_harness import (
    FakeChartRenderer,
    desired,
    reports_store,
    running_scheduler,
)
from tests.scheduler_fixtures import (
    applied,
    deployment,
    deregistered,
    make_taskset,
    override_removed,
    patch_override,
    published,
    registered,
    relabelled,
    values_override,
)

CLUSTERS = ("a", "b", "c")


class RecordingSnapshots(SnapshotStore):
    """The real store, remembering which snapshots `state --at` read a history from."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self.read_from: list[str] = []

    async def read_history(
        self, info: SnapshotInfo, cluster: str
    ) -> tuple[ClusterHistory | None, dict[str, bytes]]:
        self.read_from.append(info.id)
        return await super().read_history(info, cluster)


async def settle(store: EventStore, expected: dict[tuple[str, str], int | None]) -> datetime:
    """Wait until DESIRED holds these generations (None: nothing or a tombstone); the moment
    just after."""

    async def held() -> bool:
        for (cluster, taskset), generation in expected.items():
            task = await desired(store, cluster, taskset)
            if generation is None:
                if task is not None and not task.removed:
                    return False
            elif task is None or task.generation != generation or task.removed:
                return False
        return True

    await eventually(held, what=f"DESIRED holds {expected}")
    await asyncio.sleep(0.01)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.01)
    return moment


async def full_fold(store: EventStore) -> SchedulerState:
    """What a scheduler without snapshots rebuilds: all of EVENTS, then all of REPORTS."""
    state = SchedulerState()
    async for stored in store.read(skip_undecodable=True):
        state.apply_event(stored.seq, stored.subject, stored.stored_at, stored.event)
    async for stored in store.on_stream(REPORTS_STREAM).read(skip_undecodable=True):
        state.apply_report(
            stored.seq, stored.stored_at, stored.event, stored.headers, stored.subject
        )
    return state


async def answers(
    store: EventStore, cluster: str, at: datetime | None, snapshots: SnapshotStore
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`state --at` from the snapshots, and from a full replay (as documents)."""
    renderer = FakeChartRenderer()
    shown_at = at or datetime(2100, 1, 1, tzinfo=UTC)
    from_snapshot = await desired_state_from_log(store, cluster, at, renderer, snapshots=snapshots)
    replayed = await desired_state_at(
        store.read(until=at, skip_undecodable=True), cluster, renderer
    )
    return state_document(from_snapshot, shown_at), state_document(replayed, shown_at)


async def build_history(store: EventStore) -> tuple[list[datetime], SnapshotInfo, list[datetime]]:
    """A fleet that changes before and after a snapshot: moments before it, the snapshot,
    moments after it (a cluster deregistered, overrides changed and removed, a relabel, a new
    version)."""
    reports = await reports_store(store)
    await store.append([registered("a", env="prod"), registered("b", env="prod")])
    await store.append([registered("c", env="dev")])
    before: list[datetime] = []
    after: list[datetime] = []
    async with running_scheduler(store, snapshot_every=0):
        await store.append([published(make_taskset("web"), 1, selector="env=prod")])
        await store.append(
            [published(make_taskset("api", helm=True), 1, clusters=["a", "c"], values={"r": 1})]
        )
        before.append(
            await settle(
                store, {("a", "web"): 1, ("b", "web"): 1, ("a", "api"): 1, ("c", "api"): 1}
            )
        )
        await store.append(
            [patch_override("web", "three", "web", {"spec": {"replicas": 3}}, selector="env")]
        )
        await store.append([values_override("api", "big", {"replicas": 2}, cluster="a")])
        before.append(await settle(store, {("a", "web"): 2, ("b", "web"): 2, ("a", "api"): 2}))
        await reports.append([applied("a", "web", 1, 2)])
        await reports.append([applied("b", "web", 1, 2)])

        taken = await SnapshotTaker(store, reports, FakeChartRenderer()).take(datetime.now(UTC))
        assert taken is not None
        assert taken.events_seq == await store.last_sequence()
        assert taken.reports_seq == 2
        assert taken.clusters == 3

        await store.append([deregistered("b")])
        after.append(await settle(store, {("b", "web"): None}))
        await store.append([override_removed("web", "three")])
        await store.append([values_override("api", "big", {"replicas": 5}, cluster="a")])
        after.append(await settle(store, {("a", "web"): 3, ("a", "api"): 3}))
        await store.append([relabelled("c", env="prod")])
        await settle(store, {("c", "web"): 1})
        await store.append(
            [published(make_taskset("web", deployment("web", 4)), 2, selector="env=prod")]
        )
        after.append(await settle(store, {("a", "web"): 4, ("c", "web"): 2}))
        await reports.append([applied("a", "web", 2, 4)])
    return before, taken, after


async def test_state_at_from_a_snapshot_equals_a_full_replay_before_and_after_it(
    event_store: EventStore,
) -> None:
    before, taken, after = await build_history(event_store)
    snapshots = RecordingSnapshots(event_store)
    moments: list[datetime | None] = [*before, taken.events_time, *after, None]
    compared = 0
    for moment in moments:
        for cluster in CLUSTERS:
            snapshots.read_from.clear()
            from_snapshot, replayed = await answers(event_store, cluster, moment, snapshots)
            assert from_snapshot == replayed, (cluster, moment)
            used = moment is None or moment >= taken.events_time
            assert snapshots.read_from == ([taken.id] if used else []), (cluster, moment)
            compared += 1
    assert compared == len(moments) * len(CLUSTERS)

    # The answers say what happened, so the comparison above compared something.
    now_a, _ = await answers(event_store, "a", None, snapshots)
    assert [
        (t["clusterTask"]["tasksetName"], t["clusterTask"]["generation"]) for t in now_a["tasks"]
    ] == [("api", 3), ("web", 4)]
    assert all(t["verified"] for t in now_a["tasks"])
    now_b, _ = await answers(event_store, "b", None, snapshots)
    assert now_b["registered"] is False
    assert now_b["tasks"] == []
    at_snapshot_b, _ = await answers(event_store, "b", taken.events_time, snapshots)
    assert [t["clusterTask"]["generation"] for t in at_snapshot_b["tasks"]] == [2]
    now_c, _ = await answers(event_store, "c", None, snapshots)
    assert sorted(t["clusterTask"]["tasksetName"] for t in now_c["tasks"]) == ["api", "web"]


async def test_a_scheduler_restarts_from_the_snapshot_into_the_state_of_a_full_replay(
    event_store: EventStore,
) -> None:
    _, taken, _ = await build_history(event_store)
    end = await event_store.last_sequence()
    async with running_scheduler(event_store, snapshot_every=0) as service:
        assert service.started_from == taken.events_seq
        restarted = state_digest(service.state)
        restarted_seqs = (service.state.events_seq, service.state.reports_seq)
    assert await event_store.last_sequence() == end  # the restart decided nothing new
    full = await full_fold(event_store)
    assert restarted_seqs == (full.events_seq, full.reports_seq)
    assert restarted == state_digest(full)


async def test_the_leader_takes_a_snapshot_every_n_events(event_store: EventStore) -> None:
    await event_store.append([registered(f"c{i}", env="prod") for i in range(4)])
    snapshots = SnapshotStore(event_store)
    async with running_scheduler(event_store, snapshot_every=5):
        await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])
        await settle(event_store, {(f"c{i}", "web"): 1 for i in range(4)})
        # 4 registrations, a publish, 4 decisions: 9 events, one snapshot's worth.
        listed = await eventually_listed(snapshots)
    assert listed[0].events_seq >= 5
    assert listed[0].clusters == 4


async def test_a_scheduler_told_to_take_none_takes_none(event_store: EventStore) -> None:
    await event_store.append([registered(f"c{i}", env="prod") for i in range(4)])
    async with running_scheduler(event_store, snapshot_every=0):
        await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])
        await settle(event_store, {(f"c{i}", "web"): 1 for i in range(4)})
        await asyncio.sleep(1.5)  # a leader taking snapshots checks every second
    assert await SnapshotStore(event_store).listing() == []


async def eventually_listed(snapshots: SnapshotStore) -> list[SnapshotInfo]:
    found: list[SnapshotInfo] = []

    async def listed() -> bool:
        found[:] = await snapshots.listing()
        return bool(found)

    await eventually(listed, what="a snapshot")
    return found


async def small_log_with_two_snapshots(
    store: EventStore,
) -> tuple[SnapshotInfo, SnapshotInfo]:
    reports = await reports_store(store)
    await store.append([registered("a", env="prod")])
    async with running_scheduler(store, snapshot_every=0):
        await store.append([published(make_taskset("web"), 1, selector="env=prod")])
        await settle(store, {("a", "web"): 1})
        older = await SnapshotTaker(store, reports, FakeChartRenderer()).take(datetime.now(UTC))
        await store.append(
            [patch_override("web", "three", "web", {"spec": {"replicas": 3}}, selector="env")]
        )
        await settle(store, {("a", "web"): 2})
        newer = await SnapshotTaker(store, reports, FakeChartRenderer()).take(datetime.now(UTC))
    assert older is not None
    assert newer is not None
    assert newer.events_seq > older.events_seq
    return older, newer


async def overwrite(store: EventStore, subject: str, data: bytes) -> None:
    ack = orjson.loads((await store.nc.request(subject, data, timeout=5)).data)
    assert "seq" in ack, ack


async def test_a_corrupt_snapshot_is_skipped_for_the_next_older_one(
    event_store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    older, newer = await small_log_with_two_snapshots(event_store)
    await overwrite(event_store, f"fleet.snapshot.{newer.id}.placement.0", b"not a snapshot")
    snapshots = RecordingSnapshots(event_store)
    with caplog.at_level(logging.WARNING):
        from_snapshot, replayed = await answers(event_store, "a", None, snapshots)
    assert from_snapshot == replayed
    assert snapshots.read_from == [older.id]
    assert f"skipping snapshot {newer.id}" in caplog.text
    assert "fails its checksum" in caplog.text

    loaded = await SnapshotStore(event_store).load_state(await event_store.last_sequence(), 10**9)
    assert loaded is not None
    assert loaded[0].id == older.id
    async with running_scheduler(event_store, snapshot_every=0) as service:
        assert service.started_from == older.events_seq


async def test_a_snapshot_of_another_schema_is_skipped_and_without_any_the_log_is_replayed(
    event_store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    older, newer = await small_log_with_two_snapshots(event_store)
    manifest = f"fleet.snapshot.{newer.id}.manifest"
    future = newer.to_json() | {"schema": 999}
    await overwrite(event_store, manifest, orjson.dumps(future))
    snapshots = RecordingSnapshots(event_store)
    with caplog.at_level(logging.WARNING):
        from_snapshot, replayed = await answers(event_store, "a", None, snapshots)
    assert from_snapshot == replayed
    assert snapshots.read_from == [older.id]
    assert "schema 999" in caplog.text

    # A history part of another schema (a valid snapshot otherwise) is skipped too.
    await overwrite(
        event_store,
        f"fleet.snapshot.{older.id}.history.a",
        newer_schema_history("a"),
    )
    snapshots.read_from.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        from_snapshot, replayed = await answers(event_store, "a", None, snapshots)
    assert from_snapshot == replayed
    assert snapshots.read_from == [older.id]  # tried, then the full replay answered
    assert f"skipping snapshot {older.id}" in caplog.text
    assert "has schema 2" in caplog.text
    assert from_snapshot["tasks"][0]["clusterTask"]["generation"] == 2

    # An unreadable manifest is left out of the listing.
    await overwrite(event_store, f"fleet.snapshot.{older.id}.manifest", b"{")
    assert [info.id for info in await SnapshotStore(event_store).listing()] == [newer.id]
    assert (
        await SnapshotStore(event_store).load_state(await event_store.last_sequence(), 10**9)
        is None
    )
    async with running_scheduler(event_store, snapshot_every=0) as service:
        assert service.started_from == 0


def newer_schema_history(cluster: str) -> bytes:
    return zlib.compress(msgspec.msgpack.encode({"schema": 2, "cluster": cluster, "tasks": []}))


async def test_snapshots_live_in_their_own_stream_with_the_hub_streams(
    event_store: EventStore,
) -> None:
    info = await event_store.stream_info(SNAPSHOTS_STREAM)
    assert info["config"]["subjects"] == ["fleet.snapshot.>"]
    assert info["config"]["max_msgs_per_subject"] == 1


async def test_only_the_newest_snapshots_are_kept_and_the_others_are_removed_whole(
    event_store: EventStore,
) -> None:
    reports = await reports_store(event_store)
    taker = SnapshotTaker(event_store, reports, None, keep=2)
    taken: list[SnapshotInfo] = []
    for index in range(3):
        await event_store.append([registered(f"x{index}", env="prod")])
        info = await taker.take(datetime.now(UTC))
        assert info is not None
        taken.append(info)
    snapshots = SnapshotStore(event_store)
    assert [info.id for info in await snapshots.listing()] == [taken[2].id, taken[1].id]
    with pytest.raises(SnapshotUnreadable, match="has 0 of its 1 chunks"):
        await snapshots.read_part(taken[0], "placement")
    assert await snapshots.read_part(taken[1], "placement")
