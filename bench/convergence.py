"""Publish → applied on every cluster, measured against the real hub, and its raw NATS baseline.

The system under test is what a user runs: `fleetbus up --sim-clusters N` (the simulated
clusters live in the hub process and connect to its nats-server as NATS clients, each with its
own per-cluster credentials), `fleetbus scheduler`, and a few clusters that are separate
`fleetbus edge --sim` processes with their own leaf nats-server, registered with
`fleetbus cluster register` like real edges. A publish goes through the same function as
`fleetbus publish` (`registry.tasksets.publish_taskset`); a cluster has converged when its
`TaskApplied` for the new version is in the hub's REPORTS stream. The clock starts just before
the publish.

The baseline delivers the same ClusterTask bytes with core NATS to N subscribers (N
connections sharing one process) that each answer "applied", timed from the first publish to
each answer: the cost of the fan-out alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
from nats.js import api as js_api

from bench.hubproc import Child, HubFailed, RunningHub, running_hub, spawn
from bench.raw_responders import (
    JS_DONE_PREFIX,
    JS_SUBJECT_PREFIX,
    SUBJECT_PREFIX,
    jetstream_stream_config,
)
from bench.workload import TASKSET, example_source, variant
from charts.store import ChartStore
from events.catalog import ClusterTaskScheduled, Placement, TaskApplied
from events.store import EventStore, connect
from events.streams import DESIRED_STREAM, REPORTS_STREAM
from events.tasks import cancel_and_wait
from normalizer import NormalizedSource
from registry.tasksets import publish_taskset
from simulator.fleet import SIM_LABEL
from taskset.codec import encode_cluster_task
from taskset.digest import digest_of
from taskset.model import ClusterTask

REPO = Path(__file__).resolve().parent.parent

LEAF_EDGES = 4
"""Clusters that run as separate `fleetbus edge --sim` processes behind their own leaf node."""
STARTUP_S = 180.0
"""How long `fleetbus up --sim-clusters N` may take to be ready."""


@dataclass
class Fleet:
    hub: RunningHub
    store: EventStore
    clusters: set[str]
    edges: list[Child] = field(default_factory=list)
    versions: int = 0
    source: NormalizedSource = field(default_factory=example_source)


@dataclass(frozen=True)
class Convergence:
    latencies: list[float]
    """Seconds from the publish to each cluster's TaskApplied in REPORTS."""
    expected: int
    applied: frozenset[str] = frozenset()
    stages: dict[str, list[float]] = field(default_factory=dict)
    """Where each cluster's time went, from the stored messages' own times (one clock: this
    machine): `scheduled` publish → its ClusterTaskScheduled stored; `desired` → its ClusterTask
    stored in DESIRED; `applied` → the edge's TaskApplied occurred; `reported` → that report
    stored in the hub's REPORTS."""

    @property
    def complete(self) -> bool:
        return len(self.latencies) == self.expected


async def register_leaf_edge(
    hub: RunningHub, name: str, executor: tuple[str, ...] = ("--sim",)
) -> Child:
    """Register a cluster like a user does, and run its edge (`fleetbus edge`) as a process."""
    bundle = hub.root / "edges" / name / "bundle"
    register = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetbus.cli",
        "cluster",
        "register",
        name,
        "--label",
        f"{SIM_LABEL}=true",
        "--out",
        str(bundle),
        "--data-dir",
        str(hub.data.root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(register.communicate(), timeout=120)
    if register.returncode != 0:
        raise HubFailed(f"fleetbus cluster register {name} failed: {output.decode()[-500:]}")
    child = spawn(
        f"fleetbus edge {name}",
        [
            "edge",
            "--bundle",
            str(bundle),
            *executor,
            "--state-dir",
            str(bundle.parent / "state"),
            "--health-addr=127.0.0.1:0",  # many edges on one machine: any free port each
        ],
        hub.root / f"edge-{name}.log",
    )
    hub.children.append(child)
    return child


@contextlib.asynccontextmanager
async def running_fleet(
    clusters: int, *, leaf_edges: int = LEAF_EDGES, sim_processes: int | None = None
) -> AsyncIterator[Fleet]:
    """A hub with `clusters` clusters: `leaf_edges` of them real leaf edges, the rest sims
    (in `sim_processes` worker processes of the hub; None: the hub decides by fleet size)."""
    sims = clusters - leaf_edges
    async with running_hub(
        sim_clusters=sims, startup_timeout=STARTUP_S, sim_processes=sim_processes
    ) as hub:
        hub.start_scheduler()
        store = await hub.store()
        try:
            names = {f"sim-{i}" for i in range(1, sims + 1)}
            leaves = [f"leaf-{index}" for index in range(1, leaf_edges + 1)]
            # Registered side by side: each is a `fleetbus cluster register` process of its own.
            await asyncio.gather(*(register_leaf_edge(hub, name) for name in leaves))
            names.update(leaves)
            yield Fleet(hub=hub, store=store, clusters=names)
        finally:
            await store.close()


async def converge(fleet: Fleet, within: float) -> Convergence:
    """Publish the next version to every cluster; time each cluster's TaskApplied."""
    fleet.versions += 1
    version = fleet.versions
    reports = fleet.store.on_stream(REPORTS_STREAM)
    start_seq = await reports.last_sequence() + 1
    applied: dict[str, float] = {}
    moments: dict[str, tuple[datetime, datetime]] = {}
    everyone = asyncio.Event()

    async def watch() -> None:
        async for stored in reports.follow(from_seq=start_seq, skip_undecodable=True):
            event = stored.event
            if (
                isinstance(event, TaskApplied)
                and event.taskset == TASKSET
                and event.taskset_version == version
                and not event.removed
                and event.cluster in fleet.clusters
                and event.cluster not in applied
            ):
                applied[event.cluster] = time.monotonic()
                moments[event.cluster] = (event.occurred_at, stored.stored_at)
                if len(applied) == len(fleet.clusters):
                    everyone.set()
                    return

    watcher = asyncio.create_task(watch(), name="bench-reports")
    await asyncio.sleep(0.5)  # the follow's consumer exists before the publish
    started = time.monotonic()
    published_at = datetime.now(UTC)
    outcome = await publish_taskset(
        fleet.store,
        ChartStore.beside(fleet.store),
        variant(fleet.source, version),
        actor="user:bench",
        now=published_at,
        placement=Placement(selector=f"{SIM_LABEL}=true"),
    )
    if outcome.version != version:
        raise RuntimeError(f"published version {outcome.version}, expected {version}")
    deadline = started + within
    while not everyone.is_set() and time.monotonic() < deadline:
        fleet.hub.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), timeout=1.0)
    await cancel_and_wait([watcher])
    scheduled = await scheduled_times(fleet.store, outcome.sequence, version)
    desired = await desired_times(fleet.store, version)
    stages: dict[str, list[float]] = {"scheduled": [], "desired": [], "applied": [], "reported": []}
    for cluster, (occurred, reported) in moments.items():
        at = scheduled.get(cluster)
        written = desired.get(cluster)
        if at is None or written is None:
            continue
        stages["scheduled"].append((at - published_at).total_seconds())
        stages["desired"].append((written - at).total_seconds())
        stages["applied"].append((occurred - written).total_seconds())
        stages["reported"].append((reported - occurred).total_seconds())
    return Convergence(
        latencies=sorted(at - started for at in applied.values()),
        expected=len(fleet.clusters),
        applied=frozenset(applied),
        stages=stages,
    )


async def scheduled_times(store: EventStore, from_seq: int, version: int) -> dict[str, datetime]:
    """When each cluster's ClusterTaskScheduled for `version` was stored."""
    times: dict[str, datetime] = {}
    async for stored in store.read(
        from_seq=from_seq, subject=f"fleet.evt.schedule.{TASKSET}", skip_undecodable=True
    ):
        event = stored.event
        if isinstance(event, ClusterTaskScheduled):
            for part in event.clusters:
                if part.taskset_version == version:
                    times.setdefault(part.cluster, stored.stored_at)
    return times


async def desired_times(store: EventStore, version: int) -> dict[str, datetime]:
    """When each cluster's ClusterTask for `version` was stored in DESIRED."""
    js = store.nc.jetstream()
    sub = await js.pull_subscribe(
        f"fleet.desired.*.{TASKSET}",
        stream=DESIRED_STREAM,
        config=js_api.ConsumerConfig(
            ack_policy=js_api.AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True
        ),
    )
    times: dict[str, datetime] = {}
    try:
        while True:
            try:
                # Generous: on a loaded machine the first batch of an ephemeral consumer over
                # 10,000 subjects can take seconds; the loop ends on `num_pending` anyway.
                msgs = await sub.fetch(1000, timeout=10.0)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            for msg in msgs:
                # The payload is sealed for the cluster: its headers say what it is.
                headers = msg.headers or {}
                if (
                    headers.get("Fleetbus-Version") == str(version)
                    and headers.get("Fleetbus-Removed") != "true"
                ):
                    times[msg.subject.split(".")[2]] = msg.metadata.timestamp
            if msgs and msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return times


def cluster_task_bytes(source: NormalizedSource, cluster: str, version: int) -> bytes:
    """The DESIRED message a cluster gets for this taskset (no overrides)."""
    taskset = variant(source, version).taskset
    return encode_cluster_task(
        ClusterTask(
            cluster=cluster,
            taskset_name=taskset.name,
            version=version,
            generation=version,
            digest=digest_of(taskset),
            taskset=taskset,
        )
    )


@contextlib.asynccontextmanager
async def raw_responders(
    url: str, credentials: Path, count: int, *, mode: str = "core"
) -> AsyncIterator[None]:
    """The receivers of a raw baseline (`bench.raw_responders`), in their own process; for the
    JetStream floor, its stream is created first."""
    if mode == "jetstream":
        store = EventStore(await connect(url, credentials=credentials))
        try:
            await store.ensure_stream(jetstream_stream_config())
        finally:
            await store.close()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.raw_responders",
        "--url",
        url,
        "--creds",
        str(credentials),
        "--count",
        str(count),
        "--mode",
        mode,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=str(REPO),
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=300)
        if line.strip() != b"ready":
            raise HubFailed(f"raw responders did not start: {line!r}")
        yield
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def timed_fanout(
    url: str,
    credentials: Path,
    payload: bytes,
    count: int,
    *,
    to: str,
    answers_on: str,
    what: str,
) -> list[float]:
    """Publish `payload` on `<to>.<i>` for each of `count` receivers (reply subjects under an
    inbox), and time each receiver's answer on `<answers_on>.<i>` (None: the reply subject)
    from the first publish."""
    nc = await connect(url, name="bench-raw", credentials=credentials)
    try:
        inbox = nc.new_inbox()
        answered: dict[str, float] = {}
        replies: set[str] = set()
        everyone = asyncio.Event()

        async def answer(msg: object) -> None:
            answered.setdefault(getattr(msg, "subject", ""), time.monotonic())
            if len(answered) == count:
                everyone.set()

        async def reply(msg: object) -> None:
            replies.add(getattr(msg, "subject", ""))

        subs = [await nc.subscribe(f"{answers_on or inbox}.*", cb=answer)]
        if answers_on:
            subs.append(await nc.subscribe(f"{inbox}.*", cb=reply))
        await nc.flush()
        started = time.monotonic()
        for index in range(count):
            await nc.publish(f"{to}.{index}", payload, reply=f"{inbox}.{index}")
        await nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), timeout=60)
        for sub in subs:
            await sub.unsubscribe()
        if len(answered) != count:
            acknowledged = f" ({len(replies)} writes acknowledged)" if answers_on else ""
            raise RuntimeError(f"{what}: {len(answered)} of {count} answered{acknowledged}")
        return sorted(at - started for at in answered.values())
    finally:
        await nc.close()


async def raw_fanout(url: str, credentials: Path, payload: bytes, count: int) -> list[float]:
    """Publish `payload` to each core NATS responder; seconds from the first publish to each
    answer."""
    return await timed_fanout(
        url, credentials, payload, count, to=SUBJECT_PREFIX, answers_on="", what="raw baseline"
    )


async def jetstream_fanout(url: str, credentials: Path, payload: bytes, count: int) -> list[float]:
    """Store `payload` once per receiver in the floor's stream (pipelined, each write
    acknowledged by JetStream); seconds from the first write to each receiver's
    fetched-and-acknowledged announcement."""
    return await timed_fanout(
        url,
        credentials,
        payload,
        count,
        to=JS_SUBJECT_PREFIX,
        answers_on=JS_DONE_PREFIX,
        what="JetStream floor",
    )
