"""P2 — convergence at 10,000 clusters: how long until every cluster has applied a publish.

Same loop and topology as P1 (`bench.convergence`), at 10,000 clusters: `fleetbus up` registers
and provisions the simulated clusters and runs them in `SIM_PROCESSES` worker processes (fewer,
bigger processes: one event loop cannot drive 10,000 connectors), four more are
`fleetbus edge --sim` processes behind leaf nodes. The first version published is the cold
delivery to a fleet that has never had the taskset; the second is a routine update. Each run is
capped in time so the whole benchmark stays bounded; a cap reached is reported with how many
clusters had applied by then and where their time went.
"""

from __future__ import annotations

import time

from bench.convergence import LEAF_EDGES, Convergence, converge, running_fleet
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import HubFailed
from bench.p1_convergence import stage_note
from bench.summary import spread

KEY = "P2"
TITLE = "Convergence at 10,000 clusters"
TARGETS = [
    Target(metric="all_applied_s", label="all 10,000 clusters applied", bound=15.0, unit="s")
]
FIRST_S = 180.0
SIM_PROCESSES = 4
"""Worker processes of `fleetbus up --sim-processes` (2,499 simulated clusters each)."""
QUICK_CLUSTERS = 150
UPDATE_S = 90.0
CAPS = {"first": FIRST_S, "update": UPDATE_S}


BOUNDS = (
    "What bounds the rest: two cores for every process of the method above, all of them busy "
    "for the whole update. The stage figures show where a cluster waits: for its "
    "ClusterTaskScheduled, because the scheduler appends 10,000 conditional events and writes "
    "10,000 ClusterTasks (pipelined, 512 clusters per chunk) while nats-server is also serving "
    "10,000 pull consumers and the clusters of the earlier chunks, which already apply and "
    "report. Once its ClusterTask is stored, a cluster applies and reports within about a "
    "second at the median. The scheduler itself decides 10,000 clusters in about 0.2 s and, "
    "without a fleet answering, has DESIRED written for all of them in about 2 s (P6)."
)


def _status(run: Convergence, within: float) -> str:
    return f"{len(run.latencies):,} of {run.expected:,} clusters applied within {within:.0f} s"


async def run(mode: Mode) -> FigureResult:
    clusters = QUICK_CLUSTERS if mode.quick else 10_000
    sims = clusters - LEAF_EDGES
    processes = min(SIM_PROCESSES, sims)
    per_process = -(-sims // processes)
    metrics: list[Metric] = []
    notes: list[str] = []
    started = time.monotonic()
    runs: dict[str, Convergence] = {}
    failure = ""
    startup_s: float | None = None
    try:
        async with running_fleet(clusters, sim_processes=processes) as fleet:
            startup_s = time.monotonic() - started
            for label, within in CAPS.items():
                result = await converge(fleet, within=within)
                runs[label] = result
                if result.stages:
                    notes.append(f"{label} version: " + stage_note(clusters, result.stages))
                if not result.complete:
                    failure = f"{label} version: {_status(result, within)}"
                    break
    except HubFailed as e:
        failure = str(e).splitlines()[0]

    def finished(label: str) -> float | None:
        result = runs.get(label)
        return max(result.latencies) if result is not None and result.complete else None

    update = runs.get("update")
    if failure:
        notes.insert(0, f"Not measured: {failure}")
    missing = failure or (f"quick mode runs {QUICK_CLUSTERS} clusters" if mode.quick else "")
    metrics.append(
        Metric(
            key="all_applied_s",
            label=f"update → all {clusters:,} clusters applied",
            unit="s",
            value=finished("update") if not mode.quick else None,
            missing=missing if (mode.quick or finished("update") is None) else "",
        )
    )
    for label, text in (("first", "first delivery"), ("update", "update")):
        measured = runs.get(label)
        if measured is None or not measured.latencies:
            continue
        pooled = spread(measured.latencies)
        metrics.append(
            Metric(
                key=f"{label}_all_applied_s",
                label=f"{text} → all {clusters:,} clusters applied",
                unit="s",
                value=finished(label),
                missing="" if measured.complete else _status(measured, CAPS[label]),
            )
        )
        metrics.append(
            Metric(
                key=f"{label}_p50_s",
                label=f"{text}, p50 publish → applied ({len(measured.latencies):,} clusters)",
                unit="s",
                value=pooled.p50,
                samples=pooled,
            )
        )
    if startup_s is not None:
        metrics.append(
            Metric(
                key="startup_s",
                label=f"fleetbus up with {clusters - LEAF_EDGES:,} simulated clusters, to ready",
                unit="s",
                value=startup_s,
            )
        )
    if update is not None and update.complete and not mode.quick:
        notes.insert(0, f"Every one of the {clusters:,} clusters applied the update.")
        done = finished("update")
        if done is not None and done > TARGETS[0].bound:
            notes.append(BOUNDS)
    method = (
        f"{clusters:,} clusters on one hub: `fleetbus up --no-scheduler --sim-clusters {sims} "
        f"--sim-processes {processes}` (the hub process registers and provisions every "
        f"simulated cluster; {processes} worker processes run up to {per_process:,} of them "
        "each, every one its own NATS client of the hub's nats-server with its own "
        "credentials and durable consumer, publishing its reports straight into REPORTS), "
        f"{LEAF_EDGES} `fleetbus edge --sim` "
        "processes each behind its own leaf nats-server, and `fleetbus scheduler` (the one "
        "scheduler, in a process of its own): "
        f"{2 + processes + LEAF_EDGES} Python processes (hub, {processes} sim workers, "
        f"{LEAF_EDGES} edges, scheduler) and {1 + LEAF_EDGES} nats-servers on one machine. "
        "A first version is published "
        f"(cold delivery, capped at {FIRST_S:.0f} s), then a second (update, capped at "
        f"{UPDATE_S:.0f} s); the figure is the time from the update's publish until the last "
        "cluster's TaskApplied is in the hub's REPORTS stream."
    )
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra={"clusters": clusters},
    )
