"""P15 — delivery at R3: simulated clusters over a 3-node NATS cluster, a node killed mid-rollout.

Three nats-server processes (the hub's cluster, rendered like `fleetbus nats-node` renders them)
carry the hub's streams with three replicas; `fleetbus up --nats-url … --replicas 3
--sim-clusters N` runs the hub on them with N simulated clusters, each a NATS client of the
cluster with its own credentials and its own durable consumer on DESIRED. A first version is
published and timed to every cluster's TaskApplied in REPORTS; then a second is published and,
half a second later, the node holding the most durables is killed (SIGKILL). The figures: how
long each rollout took (publish → the last TaskApplied stored), how many clusters converged
and how many were lost, the Raft groups each node takes part in before and after (`/raftz`),
how many durables moved to the nodes that stayed up, and each nats-server's resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import Child, HubFailed, spawn
from bench.p2_convergence_10k import startup_split
from bench.procstat import rss_mib
from bench.workload import TASKSET, example_source, variant
from charts.store import ChartStore
from events import edges
from events.catalog import Placement, TaskApplied
from events.errors import EventLogError, EventLogUnavailable
from events.store import EventStore
from events.streams import DESIRED_STREAM, REPORTS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.local import open_local_store
from fleetbus.natsserver import free_port
from registry.tasksets import publish_taskset
from simulator.fleet import SIM_LABEL
from tests.faults.nats_cluster import NatsCluster

KEY = "P15"
TITLE = "Delivery at R3: simulated clusters over 3 nodes, a node killed mid-rollout"
TARGETS = [
    Target(
        metric="killed_all_applied_s",
        label="all 10,000 clusters applied with a node killed mid-rollout",
        bound=60.0,
        unit="s",
    ),
    Target(metric="clusters_lost", label="clusters lost", bound=0.0, unit="clusters"),
]
FULL_CLUSTERS = 10_000
QUICK_CLUSTERS = 60
STARTUP_S = 1500.0
"""Longer than `fleetbus up` gives its simulated fleet to start (`simulator.fleet.sim_budget`)."""
PUBLISH_WITHIN_S = 60.0
"""A publish answered "unavailable" (JetStream electing a leader) is sent again this long."""
ROLLOUT_S = 300.0
KILL_AFTER_S = 0.0
"""The node is killed this long after the publish is acknowledged: before the scheduler has
written most of DESIRED, so the rollout runs through the loss."""


async def durable_placement(store: EventStore) -> tuple[dict[str, str], int, list[str]]:
    """Clusters' durable on DESIRED -> the node leading it, how many consumers did not
    answer, and the names of DESIRED's other consumers (none is expected)."""
    placed: dict[str, str] = {}
    others: list[str] = []
    missing = 0
    offset = 0
    while True:
        page = await store.api_request(f"CONSUMER.LIST.{DESIRED_STREAM}", {"offset": offset})
        consumers = page.get("consumers") or []
        absent = page.get("missing") or []
        for info in consumers:
            name = str(info["name"])
            if name.startswith(edges.DURABLE_PREFIX):
                placed[name] = (info.get("cluster") or {}).get("leader", "")
            else:
                others.append(name)
        missing += len(absent)
        offset += len(consumers) + len(absent)
        if (not consumers and not absent) or offset >= int(page["total"]):
            return placed, missing, others


async def applied_times(store: EventStore, from_seq: int, version: int) -> dict[str, datetime]:
    """When each cluster's TaskApplied for `version` was stored in REPORTS."""
    stored_at: dict[str, datetime] = {}
    async for stored in store.on_stream(REPORTS_STREAM).read(
        from_seq=from_seq, skip_undecodable=True
    ):
        event = stored.event
        if (
            isinstance(event, TaskApplied)
            and event.taskset == TASKSET
            and event.taskset_version == version
            and not event.removed
        ):
            stored_at.setdefault(event.cluster, stored.stored_at)
    return stored_at


async def rollout(
    store: EventStore,
    hub: Child,
    version: int,
    clusters: int,
    *,
    during: float | None = None,
    fault: contextlib.AbstractContextManager[None] | None = None,
) -> tuple[float | None, int, int]:
    """Publish `version` to every simulated cluster; (seconds from the publish to the last
    TaskApplied stored, or None if not all applied within `ROLLOUT_S`; clusters applied;
    clusters that had applied when `fault` was entered, `during` seconds after the
    publish)."""
    start_seq = await store.on_stream(REPORTS_STREAM).last_sequence() + 1
    published_at = datetime.now(UTC)
    deadline = time.monotonic() + PUBLISH_WITHIN_S
    while True:
        try:
            outcome = await publish_taskset(
                store,
                ChartStore.beside(store),
                variant(example_source(), version),
                actor="user:bench",
                now=published_at,
                placement=Placement(selector=f"{SIM_LABEL}=true"),
            )
            break
        except EventLogUnavailable:
            # A leader being elected after a node was lost: published again, the same
            # content is the same version.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    if outcome.version != version:
        raise RuntimeError(f"published version {outcome.version}, expected {version}")
    at_fault = 0
    if fault is not None and during is not None:
        await asyncio.sleep(during)
        fault.__enter__()
        with contextlib.suppress(EventLogError):
            at_fault = len(await applied_times(store, start_seq, version))
    deadline = time.monotonic() + ROLLOUT_S
    applied: dict[str, datetime] = {}
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            raise HubFailed(f"fleetbus up exited: {hub.last_error()}")
        with contextlib.suppress(EventLogError):  # a leader election: read again
            applied = await applied_times(store, start_seq, version)
        if len(applied) >= clusters:
            return (max(applied.values()) - published_at).total_seconds(), len(applied), at_fault
        await asyncio.sleep(2.0)
    return None, len(applied), at_fault


class NodeKill(contextlib.AbstractContextManager[None]):
    def __init__(self, cluster: NatsCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index

    def __enter__(self) -> None:
        self.cluster.nodes[self.index].kill()

    def __exit__(self, *exc: object) -> None:
        return None


SIM_CONNECTION = "fleetbus-edge-sim-"
REHOMED_LINE = "durables on DESIRED were on a node that is down"
RESET_LINE = "is back: deleted and created again the"


def sims_per_node(cluster: NatsCluster) -> list[int]:
    """Simulated clusters connected to each node that is up (`/connz`)."""
    return [
        len(cluster.client_names(index, SIM_CONNECTION))
        for index, node in enumerate(cluster.nodes)
        if node.running()
    ]


def node_figures(cluster: NatsCluster) -> tuple[list[int], list[float]]:
    """Raft groups and resident MiB of each node that is up."""
    groups: list[int] = []
    rss: list[float] = []
    for index, node in enumerate(cluster.nodes):
        if not node.running():
            continue
        groups.append(len(cluster.raft_groups(index)))
        rss.append(rss_mib(node.pid))
    return groups, rss


async def run(mode: Mode) -> FigureResult:
    clusters = mode.clusters or (QUICK_CLUSTERS if mode.quick else FULL_CLUSTERS)
    metrics: list[Metric] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fleetbus-bench-r3-") as tmp:
        root = Path(tmp)
        data = DataDir(root / "hub")
        cluster = NatsCluster(root / "cluster", data)
        hub: Child | None = None
        try:
            await asyncio.to_thread(cluster.start)
            hub = spawn(
                "fleetbus up",
                [
                    "up",
                    "--data-dir",
                    str(data.root),
                    "--http",
                    f"127.0.0.1:{free_port()}",
                    "--nats-url",
                    ",".join(cluster.urls),
                    "--replicas",
                    "3",
                    "--sim-clusters",
                    str(clusters),
                ],
                root / "hub.log",
            )
            started = time.monotonic()
            while True:
                hub.check()
                store = await _ready_store(data, clusters)
                if store is not None:
                    break
                if time.monotonic() - started > STARTUP_S:
                    raise HubFailed(f"fleetbus up not ready after {STARTUP_S:.0f} s")
                await asyncio.sleep(2.0)
            startup_s = time.monotonic() - started
            split = startup_split((root / "hub.log").read_text(errors="replace"))
            log_text = ""
            try:
                groups_before, rss_before = node_figures(cluster)
                connected_before = sims_per_node(cluster)
                first_s, first_applied, _ = await rollout(store, hub, 1, clusters)
                placement, _, _ = await durable_placement(store)
                victim, held = Counter(placement.values()).most_common(1)[0]
                index = cluster.index_of(victim)
                killed_s, killed_applied, before_kill = await rollout(
                    store,
                    hub,
                    2,
                    clusters,
                    during=KILL_AFTER_S,
                    fault=NodeKill(cluster, index),
                )
                after, missing, other_consumers = await durable_placement(store)
                groups_after, rss_after = node_figures(cluster)
                connected_after = sims_per_node(cluster)
                hub_rss = rss_mib(hub.process.pid)
            finally:
                await store.close()
        finally:
            if hub is not None:
                hub.stop()
                log_text = (root / "hub.log").read_text(errors="replace")
            await asyncio.to_thread(cluster.stop)
    lost = clusters - killed_applied
    rehoming_passes = log_text.count(REHOMED_LINE)
    resets = log_text.count(RESET_LINE)
    metrics += [
        Metric(
            key="all_applied_s",
            label=f"publish → all {clusters:,} clusters applied, 3 nodes up",
            unit="s",
            value=first_s,
            missing="" if first_s is not None else f"{first_applied:,} applied",
        ),
        Metric(
            key="killed_all_applied_s",
            label=f"publish → all {FULL_CLUSTERS:,} applied, a node killed right after the publish",
            unit="s",
            value=killed_s if clusters == FULL_CLUSTERS else None,
            missing=""
            if clusters == FULL_CLUSTERS and killed_s is not None
            else (f"run at {clusters:,} clusters" if killed_s is not None else "not all"),
        ),
        Metric(
            key="killed_run_all_applied_s",
            label=f"the same at {clusters:,} clusters",
            unit="s",
            value=killed_s,
            missing="" if killed_s is not None else f"{killed_applied:,} applied",
        ),
        Metric(key="clusters_lost", label="clusters lost", unit="clusters", value=float(lost)),
        Metric(
            key="raft_groups_per_node",
            label="Raft groups per node (most of any node, after the kill)",
            unit="groups",
            value=float(max(groups_before + groups_after)),
        ),
        Metric(
            key="durables_moved",
            label=f"durables moved off the killed node ({victim})",
            unit="durables",
            value=float(held),
            better="higher",
        ),
        Metric(
            key="nats_rss_mib",
            label="nats-server RSS, largest node after the rollouts",
            unit="MiB",
            value=max(rss_after),
        ),
    ]
    metrics.append(
        Metric(
            key="hub_rss_mib",
            label="hub process RSS after the rollouts (`fleetbus up`, its scheduler and services)",
            unit="MiB",
            value=hub_rss,
        )
    )
    size = "the target" if clusters == FULL_CLUSTERS else "the size run on this machine"
    notes.append(
        f"Run at {clusters:,} clusters ({size}); hub start-up with them {startup_s:.0f} s."
    )
    if split is not None:
        registered_s, provisioned_s, connected_s = split
        notes.append(
            f"Start-up of the {clusters:,} simulated clusters, from the hub's log: their "
            f"registrations appended in {registered_s:.1f} s, access and provisioning (one "
            f"durable each on DESIRED) {provisioned_s:.1f} s, connecting them (every connector "
            f"subscribed) {connected_s:.1f} s; per cluster "
            f"{1000 * registered_s / clusters:.1f} / {1000 * provisioned_s / clusters:.1f} / "
            f"{1000 * connected_s / clusters:.1f} ms."
        )
    notes.append(
        "Raft groups per node before / after the kill: "
        f"{groups_before} / {groups_after} (the hub's streams, `DURABLE_MOVES` among them, "
        "and, once it reads, the scheduler's own durables on EVENTS and REPORTS; no group per "
        "cluster: each cluster's durable has one replica). "
        "nats-server RSS per node before / after: "
        f"{[round(v) for v in rss_before]} / {[round(v) for v in rss_after]} MiB."
    )
    notes.append(
        "Simulated clusters connected to each node (`/connz`), spread over the nodes in the "
        f"order of `--nats-url`: {connected_before} before the kill, {connected_after} on the "
        f"nodes up after it. Rehoming passes that moved durables: {rehoming_passes}; resets "
        f"of the durables moved off a node once it was back: {resets}."
    )
    notes.append(
        f"{held:,} of {len(placement):,} durables were on {victim}, killed as soon as the "
        f"second publish was acknowledged, when {before_kill:,} clusters had applied it; "
        f"afterwards {len(after):,} answer from the "
        f"nodes that are up ({missing} not answering). Clusters applied the second version: "
        f"{killed_applied:,} of {clusters:,}. Other consumers on DESIRED: "
        f"{', '.join(other_consumers) if other_consumers else 'none'}."
    )
    method = (
        f"3 nats-server processes (R3 streams) and `fleetbus up --nats-url … --replicas 3 "
        f"--sim-clusters {clusters}` (hub, its scheduler and the simulated clusters, each a NATS "
        "client with its own durable on DESIRED), on one machine; publish → the last "
        "TaskApplied stored in REPORTS, for a first version with every node up, then for a "
        "second with the node holding the most durables killed (SIGKILL) as soon as the "
        f"publish is acknowledged. Machine: {os.cpu_count()} cores shared with other work."
    )
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra={
            "clusters": clusters,
            "sims_per_node_before_kill": connected_before,
            "sims_per_node_after_kill": connected_after,
            "rehoming_passes": rehoming_passes,
        },
    )


async def _ready_store(data: DataDir, clusters: int) -> EventStore | None:
    """The hub's store once every simulated cluster's durable exists, else None."""
    if not data.hub_json.exists():
        return None
    store = await open_local_store(data.root)
    try:
        placed, _, _ = await durable_placement(store)
    except EventLogError:
        placed = {}
    if len(placed) >= clusters:
        return store
    await store.close()
    return None
