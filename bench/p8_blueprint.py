"""P8 — a blueprint of five tasksets over a simulated fleet: publish → every cluster in sync.

The fleet is the one P1 measures (`fleetbus up --sim-clusters N` and `fleetbus scheduler` in a
process of its own, see `bench.convergence`). Five tasksets are published first with no
placement of their own (`stack-1` … `stack-5`, each the example application), then one
blueprint carrying all five, `stack-2` … `stack-5` depending on `stack-1`, selecting every
cluster. The clock starts just before the blueprint is published (through
`registry.blueprints.publish_blueprint`, what `fleetbus blueprint publish` calls); a cluster is
in sync when the hub's REPORTS stream holds its TaskApplied for every entry. The figure also
counts clusters on which a dependent was applied before its dependency: it must be zero.

Run it alone with `python -m bench --full --only P8` (or `--quick`: 100 clusters).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.convergence import running_fleet
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import HubFailed
from bench.summary import spread
from bench.workload import example_source
from charts.store import ChartStore
from events.catalog import Placement, TaskApplied
from events.store import EventStore
from events.streams import REPORTS_STREAM
from events.tasks import cancel_and_wait
from registry.blueprints import publish_blueprint
from registry.tasksets import publish_taskset
from simulator.fleet import SIM_LABEL
from taskset.blueprints import BlueprintEntry, BlueprintSpec

KEY = "P8"
TITLE = "Blueprint: 5 entries with dependsOn → every cluster in sync (1,000 clusters)"
TARGETS: list[Target] = []
ENTRIES = 5
BASE = "stack-1"
WITHIN_S = 600.0


@dataclass
class BlueprintRun:
    clusters: int
    in_sync: list[float] = field(default_factory=list)
    """Seconds from the publish to each cluster's last entry applied."""
    base_applied: list[float] = field(default_factory=list)
    """Seconds from the publish to each cluster's `stack-1` applied."""
    out_of_order: int = 0
    failure: str = ""


def stack_spec() -> BlueprintSpec:
    return BlueprintSpec(
        name="bench-stack",
        selector=f"{SIM_LABEL}=true",
        entries=[
            BlueprintEntry(taskset=f"stack-{i}", depends_on=[] if i == 1 else [BASE])
            for i in range(1, ENTRIES + 1)
        ],
    )


async def measure(clusters: int) -> BlueprintRun:
    result = BlueprintRun(clusters=clusters)
    async with running_fleet(clusters, leaf_edges=0) as fleet:
        store = fleet.store
        charts = ChartStore.beside(store)
        for i in range(1, ENTRIES + 1):
            await publish_taskset(
                store,
                charts,
                example_source(f"stack-{i}"),
                actor="user:bench",
                now=datetime.now(UTC),
                placement=Placement(),
            )
        reports = EventStore(store.nc, stream=REPORTS_STREAM)
        start_seq = await reports.last_sequence() + 1
        applied: dict[str, dict[str, float]] = {name: {} for name in fleet.clusters}
        synced: dict[str, float] = {}
        everyone = asyncio.Event()

        async def watch() -> None:
            async for stored in reports.follow(from_seq=start_seq, skip_undecodable=True):
                event = stored.event
                if not isinstance(event, TaskApplied) or event.removed:
                    continue
                seen = applied.get(event.cluster)
                if seen is None or event.taskset in seen:
                    continue
                seen[event.taskset] = time.monotonic()
                if event.taskset != BASE and BASE not in seen:
                    result.out_of_order += 1
                if len(seen) == ENTRIES:
                    synced[event.cluster] = seen[event.taskset]
                    if len(synced) == len(applied):
                        everyone.set()
                        return

        watcher = asyncio.create_task(watch(), name="bench-blueprint-reports")
        await asyncio.sleep(0.5)  # the follow's consumer exists before the publish
        started = time.monotonic()
        await publish_blueprint(store, stack_spec(), actor="user:bench", now=datetime.now(UTC))
        deadline = started + WITHIN_S
        while not everyone.is_set() and time.monotonic() < deadline:
            fleet.hub.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), timeout=1.0)
        await cancel_and_wait([watcher])
        result.in_sync = sorted(at - started for at in synced.values())
        result.base_applied = sorted(
            seen[BASE] - started for seen in applied.values() if BASE in seen
        )
        if len(synced) != len(applied):
            result.failure = (
                f"{len(synced)} of {len(applied)} clusters in sync within {WITHIN_S:.0f} s"
            )
    return result


async def run(mode: Mode) -> FigureResult:
    clusters = 100 if mode.quick else 1000
    try:
        result = await measure(clusters)
    except HubFailed as e:
        return FigureResult(
            key=KEY, title=TITLE, targets=TARGETS, not_measured=str(e).splitlines()[0]
        )
    at = f"{clusters:,} clusters"
    missing = result.failure
    in_sync = spread(result.in_sync) if result.in_sync and not missing else None
    base = spread(result.base_applied) if result.base_applied else None
    metrics = [
        Metric(
            key="all_in_sync_s",
            label=f"publish → every cluster in sync, {at}",
            unit="s",
            value=in_sync.max if in_sync else None,
            missing=missing,
        ),
        Metric(
            key="in_sync_p50_s",
            label=f"publish → cluster in sync, p50, {at}",
            unit="s",
            value=in_sync.p50 if in_sync else None,
            samples=in_sync,
            missing=missing,
        ),
        Metric(
            key="base_applied_p50_s",
            label=f"publish → dependency ({BASE}) applied, p50, {at}",
            unit="s",
            value=base.p50 if base else None,
            missing="no cluster applied it" if base is None else "",
        ),
        Metric(
            key="out_of_order",
            label="clusters where a dependent was applied before its dependency",
            unit="",
            value=float(result.out_of_order),
        ),
    ]
    method = (
        f"One hub with {clusters:,} simulated clusters (`fleetbus up --sim-clusters "
        f"{clusters:,}`) and `fleetbus scheduler` in its own process. {ENTRIES} tasksets "
        f"(the example application under five names) are published without a placement; "
        f"then one blueprint with all five, `stack-2`…`stack-{ENTRIES}` dependsOn `{BASE}`, "
        "selecting every cluster, is published with `publish_blueprint` (what `fleetbus "
        "blueprint publish` calls). A cluster is in sync when its TaskApplied for every entry "
        "is in the hub's REPORTS stream; times are from just before the publish."
    )
    notes = [
        "Dependency order costs one round trip per level: a cluster's dependents are "
        f"scheduled only once its `{BASE}` TaskApplied has reached the hub, so in-sync time is "
        "about twice a single taskset's convergence (P1) plus the scheduler's decision for "
        "the dependents.",
    ]
    if missing:
        notes.insert(0, f"Not measured in full: {missing}")
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra={"clusters": clusters, "entries": ENTRIES},
    )
