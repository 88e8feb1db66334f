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

import contextlib
import os
import re
import time
from pathlib import Path

from bench.convergence import LEAF_EDGES, Convergence, Fleet, converge, running_fleet
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import HubFailed
from bench.p1_convergence import stage_note
from bench.procstat import CLOCK_TICKS, children_of, cpu_percent_of_core, cpu_ticks
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
FULL_CLUSTERS = 10_000
UPDATE_S = 90.0
CAPS = {"first": FIRST_S, "update": UPDATE_S}


BOUNDS = (
    "What bounds the rest: the two cores. Every process of the method above is busy for the "
    "whole update (the CPU line above says how much each used); the simulated clusters' worker "
    "processes and nats-server (serving 10,000 connections and pull consumers, the "
    "scheduler's pipelined writes and every cluster's report and acknowledgement) use most "
    "of it. The stage figures show where a cluster waits: its ClusterTaskScheduled is stored "
    "early (a decision's appends run ahead of its writes), then its ClusterTask waits to be "
    "written while the DESIRED writes share the cores with the deliveries, applies and "
    "reports of the clusters written before it; once stored it applies and reports in a few "
    "seconds at the median. The scheduler on its own decides 10,000 clusters in about 0.2 s "
    "and has DESIRED written for all of them in about 2 s when no fleet is answering (P6)."
)


def process_ticks(fleet: Fleet) -> dict[str, int]:
    """CPU clock ticks used so far by the processes of the loop, summed by role."""
    roles: dict[str, int] = {}

    def add(role: str, pid: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            roles[role] = roles.get(role, 0) + cpu_ticks(pid)

    hub = fleet.hub.hub.pid
    add("hub process", hub)
    with contextlib.suppress(OSError):
        for pid in children_of(hub):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                add("hub's nats-server" if b"nats-server" in command else "sim workers", pid)
    for child in fleet.hub.children:
        role = "scheduler" if "scheduler" in child.name else "leaf edges"
        add(role, child.pid)
        with contextlib.suppress(OSError):
            for pid in children_of(child.pid):
                add(role, pid)
    return roles


def cpu_note(used: dict[str, int], seconds: float) -> str:
    """Where the update's CPU went, by role, against what the machine's cores offered."""
    total = sum(used.values()) / CLOCK_TICKS
    parts = [
        f"{role} {ticks / CLOCK_TICKS:.1f} s "
        f"({cpu_percent_of_core(ticks, seconds):.0f} % of a core)"
        for role, ticks in sorted(used.items(), key=lambda item: -item[1])
    ]
    cores = os.cpu_count() or 1
    return (
        f"CPU used during the update ({seconds:.1f} s of wall time, from /proc): "
        + ", ".join(parts)
        + f"; {total:.1f} s in all of the {seconds * cores:.1f} s {cores} cores offer."
    )


_STARTED = re.compile(
    r"registered in (?P<registered>[0-9.]+) s, provisioned in (?P<provisioned>[0-9.]+) s, "
    r"connected in (?P<connected>[0-9.]+) s"
)


def startup_split(hub_log: str) -> tuple[float, float, float] | None:
    """From the hub's log: seconds spent appending the simulated clusters' registrations,
    then making them effective (access and durable consumers), then connecting them (worker
    processes started, every connector subscribed)."""
    found = _STARTED.search(hub_log)
    if found is None:
        return None
    return float(found["registered"]), float(found["provisioned"]), float(found["connected"])


def _status(run: Convergence, within: float) -> str:
    return f"{len(run.latencies):,} of {run.expected:,} clusters applied within {within:.0f} s"


async def run(mode: Mode) -> FigureResult:
    clusters = mode.clusters or (QUICK_CLUSTERS if mode.quick else FULL_CLUSTERS)
    scaled = "" if clusters == FULL_CLUSTERS else f"run at {clusters:,} clusters"
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
            startup_s = fleet.hub.ready_s
            split = startup_split(fleet.hub.hub.tail(400))
            if split is not None:
                notes.append(
                    f"Start-up of {sims:,} simulated clusters ({startup_s:.1f} s until "
                    f"`fleetbus up` was ready), from the hub's log: their registrations "
                    f"appended {split[0]:.1f} s, access and provisioning (durable consumers) "
                    f"{split[1]:.1f} s, connecting them ({processes} worker processes, every "
                    f"connector subscribed) {split[2]:.1f} s; the rest is the hub's own start "
                    f"(Python, nats-server, services). Registering the {LEAF_EDGES} leaf edges "
                    f"and starting them took {time.monotonic() - started - startup_s:.1f} s "
                    "more."
                )
            for label, within in CAPS.items():
                before, started_at = process_ticks(fleet), time.monotonic()
                result = await converge(fleet, within=within)
                runs[label] = result
                seconds = time.monotonic() - started_at
                if any(result.stages.values()):
                    notes.append(f"{label} version: " + stage_note(clusters, result.stages))
                if label == "update":
                    used = {
                        role: ticks - before.get(role, 0)
                        for role, ticks in process_ticks(fleet).items()
                    }
                    notes.append(cpu_note(used, seconds))
                if not result.complete:
                    absent = sorted(fleet.clusters - result.applied)
                    failure = (
                        f"{label} version: {_status(result, within)} (not: "
                        f"{', '.join(absent[:5])}{', …' if len(absent) > 5 else ''})"
                    )
                    break
    except HubFailed as e:
        failure = str(e).splitlines()[0]

    def finished(label: str) -> float | None:
        result = runs.get(label)
        return max(result.latencies) if result is not None and result.complete else None

    update = runs.get("update")
    if failure:
        notes.insert(0, f"Not measured: {failure}")
    missing = failure or scaled
    metrics.append(
        Metric(
            key="all_applied_s",
            label=f"update → all {clusters:,} clusters applied",
            unit="s",
            value=finished("update") if not scaled else None,
            missing=missing if (scaled or finished("update") is None) else "",
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
    if update is not None and update.complete and not scaled:
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
