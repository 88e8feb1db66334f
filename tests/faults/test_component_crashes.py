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

import orjson
import pytest

from events.catalog import RolloutAdvanced, RolloutStrategy, TaskApplied
from events.edges import report_origin
from events.sealed import EventSealer
from events.store import EventStore, connect
from events.streams import REPORTS_STREAM
from projector.db import ProjectionDb
from sealing.keyring import Keyring
from tests.eventually import eventually
from tests.faults.components import Component, kill_nats_servers_under
from tests.faults.harness import LONG, record_figures
from tests.faults.projection import clean_replay_digests
from tests.integration.edge_harness import EdgeHub, edge_hub
from tests.integration.scheduler_harness import desired, events_of, scheduled_of, versions
from tests.processes import nats_servers_under
from tests.scheduler_fixtures import config_map, make_taskset, published
from tests.security.live_hub import LiveHub

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
                f"--creds={hub.credentials}",
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
                "--health-addr=127.0.0.1:0",
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
                await eventually(converged, f"every cluster holding version {version}", 120, 0.5)
            except AssertionError as stuck:
                raise AssertionError(await diagnosis(hub, names, components)) from stuck
            generation_of = {
                cluster: max(
                    e.generation
                    for e in await scheduled_of(hub.store)
                    if e.cluster == cluster and e.taskset == TASKSET
                )
                for cluster in names
            }
            await eventually(
                lambda: applied_everywhere(hub, names, generation_of),
                "every cluster reporting its last generation applied",
                180,
                0.5,
            )
            db_path = root / "projector.db"
            await eventually(
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
            await eventually(
                lambda: projector_positions_are(db_path, ends), "the projector at the end", 60, 0.3
            )
        db = await ProjectionDb.open_readonly(db_path)
        try:
            projected = await db.table_digests()
        finally:
            await db.close()
        assert projected == await clean_replay_digests(hub.store, tmp_path)

        scheduled = await scheduled_of(hub.store)
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
        for e in await scheduled_of(hub.store)
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


async def hub_view(
    hub: LiveHub, names: list[str]
) -> tuple[dict[str, int | None], set[tuple[str, int]]]:
    """From the hub's NATS, as the hub's own user: the version each cluster holds in DESIRED,
    and the (cluster, generation) of every TaskApplied in REPORTS, by its source header."""
    info = orjson.loads((hub.data_dir / "hub.json").read_bytes())
    nc = await connect(
        info["nats_url"],
        credentials=hub.data_dir / "creds" / "hub.creds",
        max_reconnect_attempts=2,
    )
    try:
        # DESIRED is sealed for each cluster: read it with the hub's own keyring.
        store = EventStore(nc, sealer=EventSealer(Keyring.open(hub.data_dir / "keys")))
        held: dict[str, int | None] = {}
        for cluster in names:
            task = await desired(store, cluster, TASKSET)
            held[cluster] = None if task is None else task.version
        applied = {
            (report_origin(stored.subject, stored.headers) or "?", stored.event.generation)
            async for stored in EventStore(nc, stream=REPORTS_STREAM).read()
            if isinstance(stored.event, TaskApplied) and stored.event.taskset == TASKSET
        }
        return held, applied
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("seed", "clusters", "faults"),
    [
        pytest.param(2718, 3, 4, id="seed=2718-clusters=3-faults=4"),
        pytest.param(31337, 4, 12, id="seed=31337-clusters=4-faults=12", marks=LONG),
    ],
)
async def test_killing_the_hub_process_and_edges_mid_rollout_converges(
    tmp_path: Path, seed: int, clusters: int, faults: int
) -> None:
    """The deployed shape: `fleetbus up` runs the scheduler and the projector in its own process,
    so killing them means killing the hub (its nats-server lives on, orphaned, until the hub
    starts again and takes it over); each edge is `fleetbus edge --sim`."""
    rng = random.Random(seed)
    names = [f"c{index}" for index in range(1, clusters + 1)]
    hub = LiveHub(tmp_path / "hub")
    data = ("--data-dir", str(hub.data_dir))
    edges: dict[str, Component] = {}
    injected: list[str] = []
    started = time.monotonic()
    try:
        await asyncio.to_thread(hub.start)
        for cluster in names:
            bundle = tmp_path / "bundles" / cluster
            done = await asyncio.to_thread(
                hub.cli, "cluster", "register", cluster, "--label", "env=prod",
                "--out", str(bundle), *data,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            edges[cluster] = Component(
                f"edge {cluster}",
                [
                    "-m", "fleetbus.cli", "edge", "--bundle", str(bundle), "--sim",
                    "--state-dir", str(tmp_path / "edges" / cluster),
                    "--health-addr=127.0.0.1:0",
                ],
                tmp_path / f"edge-{cluster}.log",
            )  # fmt: skip
            edges[cluster].start()

        async def publish_version(version: int) -> None:
            source = tmp_path / f"web-v{version}.yaml"
            source.write_text(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config}\n"
                f"data: {{version: '{version}'}}\n"
            )
            done = await asyncio.to_thread(
                hub.cli, "publish", str(source), "--name", TASKSET, "--selector", "env=prod",
                "--batch-size", "1", *data,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr

        version = 1
        await publish_version(version)
        plan = ["hub", f"edge {rng.choice(names)}"]
        plan += [rng.choice(["hub", *(f"edge {c}" for c in names)]) for _ in range(faults - 2)]
        rng.shuffle(plan)
        for index, victim in enumerate(plan):
            if index == len(plan) // 2:
                version += 1
                await publish_version(version)
            await asyncio.sleep(rng.uniform(0.3, 2.5))  # a random point of the rollout
            if victim == "hub":
                assert hub.process is not None
                hub.process.kill()
                hub.process.wait(10)
                await asyncio.sleep(rng.uniform(0.1, 2.0))
                await asyncio.to_thread(hub.start)
            else:
                edge = edges[victim.split()[1]]
                edge.kill9()
                await asyncio.sleep(rng.uniform(0.1, 2.0))
                edge.start()
            injected.append(victim)

        async def converged() -> bool:
            held, _ = await hub_view(hub, names)
            return held == dict.fromkeys(names, version)

        await eventually(converged, f"every cluster holding version {version}", 120, 0.5)

        async def reported() -> bool:
            scheduled = await scheduled_generations(hub, names)
            _, applied = await hub_view(hub, names)
            return all((c, g) in applied for c, g in scheduled.items())

        await eventually(reported, "every cluster reporting its last generation", 120, 0.5)
        status = await asyncio.to_thread(hub.cli, "status", TASKSET, "-o", "json", *data)
        assert status.returncode == 0, status.stderr

        async def projected() -> bool:
            return await projected_everywhere(hub.data_dir / "projector.db", names, version)

        await eventually(projected, f"the hub's projection showing version {version}", 60, 0.5)
        for edge in edges.values():
            edge.stop()  # no more reports: the log is still from here on

        async def projection_equals_a_clean_replay() -> bool:
            live = await asyncio.to_thread(hub.cli, "projector", "digest", *data)
            clean = tmp_path / f"clean-{time.monotonic_ns()}.db"
            rebuilt = await asyncio.to_thread(
                hub.cli, "projector", "rebuild", "--out", str(clean), *data
            )
            assert rebuilt.returncode == 0, rebuilt.stderr
            replay = await asyncio.to_thread(
                hub.cli, "projector", "digest", "--db", str(clean), *data
            )
            return bool(orjson.loads(live.stdout) == orjson.loads(replay.stdout))

        await eventually(
            projection_equals_a_clean_replay, "the projection equal to a clean replay", 60, 0.5
        )
    finally:
        for edge in edges.values():
            edge.stop()
        await asyncio.to_thread(hub.stop)
        kill_nats_servers_under(tmp_path)
    record_figures(
        "R4 hub process kill -9 mid-rollout",
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


async def scheduled_generations(hub: LiveHub, names: list[str]) -> dict[str, int]:
    """The last generation scheduled for each cluster; fails if any was decided twice."""
    info = orjson.loads((hub.data_dir / "hub.json").read_bytes())
    nc = await connect(
        info["nats_url"],
        credentials=hub.data_dir / "creds" / "hub.creds",
        max_reconnect_attempts=2,
    )
    try:
        scheduled = await scheduled_of(EventStore(nc))
    finally:
        await nc.close()
    per_generation = collections.Counter(
        (e.cluster, e.generation) for e in scheduled if e.taskset == TASKSET
    )
    doubled = {key: n for key, n in per_generation.items() if n > 1}
    assert not doubled, f"ClusterTasks decided twice: {doubled}"
    return {
        cluster: max((g for c, g in per_generation if c == cluster), default=0) for cluster in names
    }
