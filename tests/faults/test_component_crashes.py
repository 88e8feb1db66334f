"""R4: kill -9 the scheduler, the projector and connectors at random points of a rollout.

The hub's nats-server runs with its edge services (cluster access, durable consumers, REPORTS
sourcing, anti-entropy); everything else is a real process of its own: the scheduler
(`fleetbus scheduler`), the projector, and one edge per cluster (`fleetbus edge --sim`: a leaf
nats-server and the connector in front of a simulated cluster). Three versions of a taskset
roll out in waves of one cluster, the next version published while the previous one is still
rolling. Meanwhile the test kills (SIGKILL) a seeded sequence of components at seeded moments and
starts each again after a seeded pause.

Afterwards the fleet must converge: every cluster holds and has applied the last version, and
the projector says so. Nothing may be doubled (one ClusterTaskScheduled per cluster and
generation, one RolloutAdvanced per version and wave, each report stored once) or lost (every
cluster reports the generation it ends with; the projection equals a clean replay of the log).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from events.catalog import ClusterTaskScheduled, RolloutAdvanced, RolloutStrategy, TaskApplied
from projector.db import ProjectionDb
from tests.faults.components import Component, kill_nats_servers_under, nats_servers_under
from tests.faults.harness import LONG, record_figures, wait_for
from tests.faults.projection import clean_replay_digests
from tests.integration.edge_harness import EdgeHub, edge_hub
from tests.integration.scheduler_harness import events_of, versions
from tests.scheduler_fixtures import config_map, make_taskset, published

TASKSET = "web"


@asynccontextmanager
async def fleet_processes(
    hub: EdgeHub, root: Path, clusters: list[str]
) -> AsyncIterator[dict[str, Component]]:
    """Scheduler, projector and one edge per cluster, each a process of its own."""
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    components = {
        "scheduler": Component(
            "scheduler",
            [
                "-m",
                "fleetbus.cli",
                "scheduler",
                "--data-dir",
                str(hub.data.root),
                "--nats-url",
                hub.server.client_url,
                "--lease-ttl",
                "2",
            ],
            root / "scheduler.log",
        ),
        "projector": Component(
            "projector",
            [
                "-m",
                "tests.faults.projector_process",
                "--urls",
                hub.server.client_url,
                "--password",
                hub.password,
                "--db",
                str(root / "projector.db"),
            ],
            root / "projector.log",
        ),
    }
    for cluster in clusters:
        bundle = hub.root / "bundles" / cluster
        components[f"edge {cluster}"] = Component(
            f"edge {cluster}",
            [
                "-m",
                "fleetbus.cli",
                "edge",
                "--bundle",
                str(bundle),
                "--sim",
                "--state-dir",
                str(root / "edges" / cluster),
            ],
            root / f"edge-{cluster}.log",
        )
    try:
        for component in components.values():
            component.start()
        yield components
    finally:
        for component in components.values():
            component.stop()
        kill_nats_servers_under(root / "edges")


async def applied_everywhere(
    hub: EdgeHub, clusters: list[str], generation_of: dict[str, int]
) -> bool:
    reported = {
        (origin, event.generation)
        for origin, event, _ in await hub.reports()
        if isinstance(event, TaskApplied) and event.taskset == TASKSET
    }
    return all((cluster, generation_of[cluster]) in reported for cluster in clusters)


async def projector_positions_are(db_path: Path, ends: dict[str, int]) -> bool:
    db = await ProjectionDb.open_readonly(db_path)
    try:
        return await db.positions() == ends
    finally:
        await db.close()


async def projected_everywhere(db_path: Path, clusters: list[str], version: int) -> bool:
    if not await asyncio.to_thread(db_path.exists):
        return False
    db = await ProjectionDb.open_readonly(db_path)
    try:
        rows = await db.fetch_all(
            "SELECT cluster, applied_version FROM cluster_status WHERE taskset = ?", (TASKSET,)
        )
    finally:
        await db.close()
    return {row["cluster"]: row["applied_version"] for row in rows} == dict.fromkeys(
        clusters, version
    )


@pytest.mark.parametrize(
    ("seed", "clusters", "faults"),
    [
        pytest.param(404, 3, 6, id="seed=404-clusters=3-faults=6"),
        pytest.param(8086, 5, 20, id="seed=8086-clusters=5-faults=20", marks=LONG),
    ],
)
async def test_killing_scheduler_projector_and_connectors_mid_rollout_converges_without_loss(
    tmp_path: Path, seed: int, clusters: int, faults: int
) -> None:
    rng = random.Random(seed)
    names = [f"c{index}" for index in range(1, clusters + 1)]
    started = time.monotonic()
    injected: list[str] = []
    async with edge_hub(tmp_path / "hub", settle=0.5, cooldown=1.0) as hub:
        for cluster in names:
            await hub.register(cluster, labels={"env": "prod"}, inventory_interval=0.5)
        root = tmp_path / "fleet"
        async with fleet_processes(hub, root, names) as components:
            targets = ["scheduler", "projector", *(f"edge {c}" for c in names)]
            plan = ["scheduler", "projector", f"edge {rng.choice(names)}"]
            plan += [rng.choice(targets) for _ in range(faults - len(plan))]
            rng.shuffle(plan)
            publish_at = sorted(rng.sample(range(len(plan)), 2))
            version = 1
            await publish(hub, version)
            for index, victim in enumerate(plan):
                if index in publish_at:
                    version += 1
                    await publish(hub, version)
                await asyncio.sleep(rng.uniform(0.2, 2.5))  # a random point of the rollout
                component = components[victim]
                assert component.running(), f"{victim} died by itself: {component.log_text()}"
                component.kill9()
                injected.append(victim)
                await asyncio.sleep(rng.uniform(0.1, 2.0))  # down for a while
                component.start()

            async def converged() -> bool:
                return await versions(hub.store, names, TASKSET) == dict.fromkeys(names, version)

            try:
                await wait_for(converged, f"every cluster holding version {version}", 120, 0.5)
            except AssertionError as stuck:
                raise AssertionError(await diagnosis(hub, names, components)) from stuck
            generation_of = {
                cluster: max(
                    e.generation
                    for e in await events_of(hub.store, ClusterTaskScheduled)
                    if e.cluster == cluster and e.taskset == TASKSET
                )
                for cluster in names
            }
            await wait_for(
                lambda: applied_everywhere(hub, names, generation_of),
                "every cluster reporting its last generation applied",
                180,
                0.5,
            )
            db_path = root / "projector.db"
            await wait_for(
                lambda: projected_everywhere(db_path, names, version),
                f"the projector showing version {version} applied everywhere",
                120,
                0.5,
            )
            for name, component in components.items():
                assert component.running(), f"{name} stopped by itself: {component.log_text()}"
            # Quiesce the writers, then let the projector read to the very end of both streams.
            for name, component in components.items():
                if name != "projector":
                    component.stop()
            ends = {
                "EVENTS": await hub.store.last_sequence(),
                "REPORTS": int((await hub.store.stream_info("REPORTS"))["state"]["last_seq"]),
            }
            await wait_for(
                lambda: projector_positions_are(db_path, ends), "the projector at the end", 60, 0.3
            )
        db = await ProjectionDb.open_readonly(db_path)
        try:
            projected = await db.table_digests()
        finally:
            await db.close()
        assert projected == await clean_replay_digests(hub.store, tmp_path)

        scheduled = await events_of(hub.store, ClusterTaskScheduled)
        per_generation = collections.Counter(
            (e.cluster, e.generation) for e in scheduled if e.taskset == TASKSET
        )
        doubled = {key: n for key, n in per_generation.items() if n > 1}
        assert not doubled, f"ClusterTasks decided twice: {doubled}"
        waves = collections.Counter(
            (e.taskset_version, e.wave) for e in await events_of(hub.store, RolloutAdvanced)
        )
        assert all(n == 1 for n in waves.values()), f"waves advanced twice: {waves}"
        report_ids = collections.Counter(event.id for _, event, _ in await hub.reports())
        assert all(n == 1 for n in report_ids.values()), "a report stored twice"
        record_figures(
            "R4 component kill -9 mid-rollout",
            seed=seed,
            clusters=clusters,
            versions=version,
            faults_injected=len(injected),
            killed=dict(collections.Counter(name.split()[0] for name in injected)),
            cluster_tasks_doubled=0,
            reports_lost=0,
            projection_equals_clean_replay=True,
            seconds=round(time.monotonic() - started, 1),
        )


async def diagnosis(hub: EdgeHub, names: list[str], components: dict[str, Component]) -> str:
    """What the fleet looks like when it did not converge: desired, reports, component logs."""
    held = await versions(hub.store, names, TASKSET)
    reports = [
        f"{origin}:{type(event).__name__}:g{getattr(event, 'generation', '?')}"
        for origin, event, _ in await hub.reports()
    ]
    scheduled = [
        f"{e.cluster}:v{e.taskset_version}:g{e.generation}:w{e.wave}"
        for e in await events_of(hub.store, ClusterTaskScheduled)
    ]
    waves = [
        f"v{e.taskset_version}w{e.wave}/{e.total_waves}"
        for e in await events_of(hub.store, RolloutAdvanced)
    ]
    tails = "\n".join(
        f"--- {name} ({'running' if component.running() else 'ended'}) ---\n"
        + "\n".join(component.log_text().splitlines()[-15:])
        for name, component in components.items()
    )
    edges = components["scheduler"].log.parent / "edges"
    for cluster in names:
        leafs = nats_servers_under(edges / cluster)
        log = edges / cluster / "nats.log"
        tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
        tails += f"\n--- leaf {cluster}: {len(leafs)} nats-server processes ---\n" + "\n".join(tail)
    return f"desired: {held}\nscheduled: {scheduled}\nwaves: {waves}\nreports: {reports}\n{tails}"


async def publish(hub: EdgeHub, version: int) -> None:
    taskset = make_taskset(TASKSET, config_map("web-config", {"version": str(version)}))
    await hub.store.append(
        [
            published(
                taskset,
                version,
                selector="env=prod",
                rollout=RolloutStrategy(batch_size=1),
            )
        ]
    )
