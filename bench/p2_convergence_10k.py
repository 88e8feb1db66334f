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
from typing import Any

from bench import desired_fanout
from bench.convergence import (
    LEAF_EDGES,
    Convergence,
    Fleet,
    cluster_task_bytes,
    converge,
    running_fleet,
)
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
    "What bounds the rest: delivery through one wildcard-filtered durable per cluster on one "
    "DESIRED stream. nats-server 2.15 finds a filtered consumer's next message by walking the "
    "stream's messages one by one from the consumer's position (a cached message block is "
    "scanned linearly whenever the filter is a wildcard such as `fleet.desired.<cluster>.>`; "
    "a literal filter jumps straight to its subject through the block's subject index), "
    "holding the block's lock, which the writes into that block need too. When an update "
    "rewrites every cluster's ClusterTask, the k-th cluster's lookup walks over the messages "
    "of the clusters written before it: about N²/2 message visits per update, serialized "
    "with the writes. So a cluster waits for its ClusterTask to be stored (the stage above) "
    "while the scheduler is idle, and the cost per cluster grows with the fleet; the "
    "JetStream floor above (the same stream and consumers with nothing of fleetbus around "
    "them) shows the server's own share, beside its variant with literal filters. A "
    "nats-server CPU profile of such an update at 10,000 clusters (pprof, 15 s windows, "
    "taken apart from this run) spent 40 to 57 % of the server's CPU in "
    "`consumer.getNextMsg` → `fileStore.LoadNextMsg` → `msgBlock.firstMatching`. The paths "
    "left: fewer clusters per stream (DESIRED in shards), delivery that needs no filtered "
    "consumer per cluster on the hub's stream, or a server that consults its subject index "
    "for wildcard filters too. The simulated clusters' worker processes and the other "
    "processes of the method share the same two cores (the CPU line above). Those workers "
    "freeze their start-up objects out of Python's garbage collector and collect less often "
    "(`simulator.heap`): a cProfile of one worker of 1,500 clusters over an update had 46 % "
    "of its CPU in the collector (3.0 of 6.7 s); what is left per delivery is the connector's "
    "own work (decoding the ClusterTask, applying it, publishing the report, acknowledging) "
    "and the NATS client's and event loop's, one connection per cluster."
)

FLOOR_NOTE = (
    "JetStream floor at this size (`bench.desired_fanout`, run after the fleet was stopped): "
    "a nats-server of its own, one stream with DESIRED's settings, one durable per cluster "
    "configured as the hub provisions them, each with a pull request pending, read and "
    "acknowledged by 8 connections in one process; one message per cluster (this run's "
    "ClusterTask, {size:,} bytes) written pipelined, 512 in flight, then rewritten (the "
    "update). {rows}"
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


def floor_metrics(
    clusters: int, floors: dict[str, dict[str, Any]], update_s: float | None
) -> list[Metric]:
    """The JetStream floor's update at this size, and the update's ratio to it."""
    wildcard = float(floors["wildcard"]["all_delivered_s"])
    metrics = [
        Metric(
            key="floor_update_s",
            label=f"JetStream floor: update delivered to all {clusters:,} consumers "
            "(filtered on each cluster's subjects, as DESIRED's durables)",
            unit="s",
            value=wildcard,
        ),
        Metric(
            key="floor_literal_update_s",
            label=f"JetStream floor, each of the {clusters:,} consumers filtered on its one "
            "subject",
            unit="s",
            value=float(floors["literal"]["all_delivered_s"]),
        ),
    ]
    if update_s is not None and wildcard > 0:
        metrics.append(
            Metric(
                key="floor_ratio",
                label="update → all applied ÷ the JetStream floor's update",
                unit="x",
                value=update_s / wildcard,
            )
        )
    return metrics


def floor_rows(clusters: int, floors: dict[str, dict[str, Any]]) -> str:
    described = {
        "wildcard": "each consumer filtered on its cluster's subjects (`fleet.desired.c<i>.>`, "
        "as the hub's durables are)",
        "literal": "each filtered on its one subject",
    }
    return " ".join(
        f"{described[variant].capitalize()}: every write acknowledged in "
        f"{row['all_written_s']:.1f} s, every consumer served in {row['all_delivered_s']:.1f} s "
        f"(p50 {row['p50_s']:.1f} s), nats-server CPU {row['server_cpu_s']:.1f} s."
        for variant, row in floors.items()
    )


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
    payload = b""
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
                payload = cluster_task_bytes(fleet.source, "sim-1", fleet.versions)
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

    floors: dict[str, dict[str, Any]] = {}
    if payload:
        for variant in ("wildcard", "literal"):
            rows = await desired_fanout.measure(clusters, payload, filtering=variant)
            floors[variant] = next(row for row in rows if row["round"] == "update")

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
    if floors:
        metrics.extend(floor_metrics(clusters, floors, finished("update")))
        notes.append(FLOOR_NOTE.format(size=len(payload), rows=floor_rows(clusters, floors)))
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
