"""The projector on a real log and a real SQLite file: live, restarted, rebuilt, queried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from events.catalog import DriftDetected, RolloutStrategy
from events.store import EventStore
from projector.db import ProjectionDb
from projector.queries import audit_trail, clusters, fleet_status, rollouts
from projector.service import ProjectorService, rebuild_projection
from tests.eventually import eventually
from tests.integration.scheduler_harness import (
    reports_store,
    running_scheduler,
    versions,
)
from tests.scheduler_fixtures import (
    applied,
    deployment,
    deregistered,
    envelope,
    failed,
    make_taskset,
    patch_override,
    published,
    registered,
)


@asynccontextmanager
async def running_projector(store: EventStore, path: Path) -> AsyncIterator[ProjectorService]:
    reports = await reports_store(store)
    service = ProjectorService(store, reports, path)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def caught_up(service: ProjectorService, store: EventStore, reports: EventStore) -> bool:
    ends = {"EVENTS": await store.last_sequence(), "REPORTS": await reports.last_sequence()}
    return all(service.positions.get(s, 0) >= seq for s, seq in ends.items() if seq)


async def scenario(store: EventStore, reports: EventStore) -> None:
    """A small history: placement, an override, a rollout with a failure, drift, removal."""
    await store.append([registered(c, env="prod") for c in ("a", "b", "c")])
    await store.append([published(make_taskset("web"), 1, selector="env=prod")])
    await eventually(lambda: _all(store, 1), what="v1 placed")
    for cluster in ("a", "b", "c"):
        await reports.append([applied(cluster, "web", 1, 1)])
    await store.append(
        [patch_override("web", "big", "web", {"spec": {"replicas": 4}}, cluster="b")]
    )
    await store.append(
        [
            published(
                make_taskset("web", deployment("web", 2)),
                2,
                selector="env=prod",
                rollout=RolloutStrategy(batch_size=2),
            )
        ]
    )
    await eventually(lambda: _at(store, {"a": 2, "b": 2}), what="first wave")
    await reports.append([applied("a", "web", 2, 2)])
    await reports.append([failed("b", "web", 2, 3)])
    await reports.append(
        [
            DriftDetected(
                **envelope("cluster:a"),
                cluster="a",
                taskset="web",
                taskset_version=2,
                generation=2,
                object="Deployment/web",
            )
        ]
    )
    await store.append([deregistered("c")])


async def _all(store: EventStore, version: int) -> bool:
    return await versions(store, ["a", "b", "c"]) == dict.fromkeys("abc", version)


async def _at(store: EventStore, expected: dict[str, int]) -> bool:
    return await versions(store, list(expected)) == expected


async def test_live_projection_answers_queries_and_a_rebuild_hashes_equal(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    live = tmp_path / "projector.db"
    async with running_scheduler(event_store), running_projector(event_store, live) as projector:
        await scenario(event_store, reports)
        await eventually(lambda: caught_up(projector, event_store, reports), what="caught up")
    db = await ProjectionDb.open_readonly(live)
    try:
        status = {(row.taskset, row.cluster): row for row in await fleet_status(db)}
        assert sorted(status) == [("web", "a"), ("web", "b")]
        row_a, row_b = status["web", "a"], status["web", "b"]
        assert (row_a.desired_version, row_a.applied_version, row_a.state) == (2, 2, "drifted")
        assert row_a.drift_count == 1
        assert (row_b.desired_version, row_b.state, row_b.overrides) == (2, "failed", ["big"])
        assert row_b.error is not None
        assert [c.name for c in await clusters(db)] == ["a", "b"]
        (rollout,) = await rollouts(db, "web")
        assert (rollout.version, rollout.state, rollout.failed) == (2, "halted", ["b"])
        trail = await audit_trail(db, cluster="b", taskset="web")
        types = [row.type for row in trail]
        assert types[:2] == ["ClusterTaskScheduled", "TaskApplied"]
        assert "OverrideSet" in types
        assert "TaskFailed" in types
        scheduled = [row for row in trail if row.type == "ClusterTaskScheduled"]
        assert all(row.actor == "scheduler" and row.causation_id for row in scheduled)
        live_digests = await db.table_digests()
    finally:
        await db.close()
    rebuilt = await rebuild_projection(event_store, reports, live, replace=False)
    assert rebuilt != live
    db = await ProjectionDb.open_readonly(rebuilt)
    try:
        assert await db.table_digests() == live_digests
    finally:
        await db.close()


async def test_a_restarted_projector_resumes_without_doubling_and_follows_a_swapped_rebuild(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    path = tmp_path / "projector.db"
    await event_store.append([registered("a", env="prod")])
    async with running_projector(event_store, path) as projector:
        await eventually(lambda: caught_up(projector, event_store, reports), what="first")
    await event_store.append([registered("b"), published(make_taskset("web"), 1, clusters=[])])
    async with running_projector(event_store, path) as projector:
        await eventually(lambda: caught_up(projector, event_store, reports), what="resumed")
        db = await ProjectionDb.open_readonly(path)
        try:
            audit = await db.fetch_all("SELECT seq FROM audit WHERE stream = 'EVENTS'")
            assert sorted(r["seq"] for r in audit) == [1, 2, 3]
        finally:
            await db.close()
        await rebuild_projection(event_store, reports, path)
        await event_store.append([registered("c")])
        await eventually(lambda: caught_up(projector, event_store, reports), what="after swap")

        async def sees_c() -> bool:
            db = await ProjectionDb.open_readonly(path)
            try:
                return [c.name for c in await clusters(db)] == ["a", "b", "c"]
            finally:
                await db.close()

        await eventually(sees_c, what="the swapped database is followed")
