"""One real edge against a real hub, for the edge's own figures (P3 drift, P5 footprint).

The hub is `fleetbus up` with `fleetbus scheduler`; the edge is `fleetbus edge` (connector and
leaf nats-server) for one cluster registered with `fleetbus cluster register`, either with the
in-memory simulator or with the Kubernetes executor against a real kube-apiserver, in which
case the cluster controller runs in the edge's own process, as the edge chart deploys it
(`split=True`: as `fleetbus controller` beside `fleetbus edge --without-controller`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.convergence import register_leaf_edge
from bench.hubproc import Child, HubFailed, RunningHub, running_hub, spawn
from charts.store import ChartStore
from events.catalog import Placement, TaskApplied, TaskFailed
from events.store import EventStore
from events.streams import REPORTS_STREAM
from events.tasks import cancel_and_wait
from normalizer import NormalizedSource, NormalizeOptions, normalize
from registry.tasksets import publish_taskset

CLUSTER = "bench-edge"


def small_taskset(name: str, *, value: str = "1") -> NormalizedSource:
    """A Namespace and a ConfigMap in it: applies and is ready on any apiserver at once."""
    namespace = f"ns-{name}"
    text = f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {namespace}
data:
  mode: "{value}"
  owner: bench
"""
    return normalize(text.encode(), NormalizeOptions(name=name, namespace=namespace))


def bulk_taskset(name: str, objects: int) -> NormalizedSource:
    """A Namespace and `objects - 1` small ConfigMaps in it: `objects` managed objects."""
    namespace = f"ns-{name}"
    documents = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n"]
    for index in range(objects - 1):
        documents.append(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: item-{index:04d}\n  namespace: {namespace}\n"
            f'data:\n  index: "{index}"\n  owner: bench\n'
        )
    text = "---\n".join(documents)
    return normalize(text.encode(), NormalizeOptions(name=name, namespace=namespace))


@dataclass
class SingleEdge:
    hub: RunningHub
    store: EventStore
    edge: Child
    controller: Child | None = None
    reported: dict[str, str] = field(default_factory=dict)
    """taskset → `applied` or the failure reason, for every report seen so far."""

    async def publish_all(self, sources: list[NormalizedSource], within: float) -> None:
        """Publish each source to this edge's cluster; wait until every one is applied."""
        reports = self.store.on_stream(REPORTS_STREAM)
        start_seq = await reports.last_sequence() + 1
        wanted = {source.taskset.name for source in sources}
        done = asyncio.Event()

        async def watch() -> None:
            async for stored in reports.follow(from_seq=start_seq, skip_undecodable=True):
                event = stored.event
                if isinstance(event, TaskApplied | TaskFailed) and event.cluster == CLUSTER:
                    outcome = "applied" if isinstance(event, TaskApplied) else event.reason
                    self.reported[event.taskset] = outcome
                    if all(self.reported.get(name) == "applied" for name in wanted):
                        done.set()
                        return

        watcher = asyncio.create_task(watch(), name="bench-edge-reports")
        try:
            await asyncio.sleep(0.5)
            charts = ChartStore.beside(self.store)
            for source in sources:
                await publish_taskset(
                    self.store,
                    charts,
                    source,
                    actor="user:bench",
                    now=datetime.now(UTC),
                    placement=Placement(clusters=[CLUSTER]),
                )
            deadline = time.monotonic() + within
            while not done.is_set():
                self.hub.check()
                if time.monotonic() > deadline:
                    applied = sum(self.reported.get(name) == "applied" for name in wanted)
                    failed = {
                        n: r for n, r in self.reported.items() if n in wanted and r != "applied"
                    }
                    first = next(iter(failed.items()), None)
                    raise HubFailed(
                        f"{applied} of {len(wanted)} tasksets applied on {CLUSTER} within "
                        f"{within:.0f} s"
                        + (f"; {first[0]} failed: {first[1]}" if first else "")
                        + f"; edge log: {self.edge.tail(2)}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=1.0)
        finally:
            await cancel_and_wait([watcher])


@contextlib.asynccontextmanager
async def single_edge(
    kubeconfig: Path | None = None, *, split: bool = False
) -> AsyncIterator[SingleEdge]:
    async with running_hub() as hub:
        hub.start_scheduler()
        controller: Child | None = None
        if kubeconfig is not None and split:
            controller = spawn(
                "fleetbus controller",
                ["controller", "--kubeconfig", str(kubeconfig), "--health-addr=127.0.0.1:0"],
                hub.root / "controller.log",
            )
            hub.children.append(controller)
        executor: tuple[str, ...] = ("--sim",)
        if kubeconfig is not None:
            executor = ("--kubeconfig", str(kubeconfig))
            executor += ("--without-controller",) if split else ()
        edge = await register_leaf_edge(hub, CLUSTER, executor)
        store = await hub.store()
        try:
            yield SingleEdge(hub=hub, store=store, edge=edge, controller=controller)
        finally:
            await store.close()
