"""P1 — convergence: publish → every cluster reports applied, at 100 and 1,000 clusters.

Each size gets its own hub (see `bench.convergence` for the topology). A first version is
published and waited for (warm-up: connections, consumers and caches settle); then each measured
run publishes the next version and times every cluster. Two raw baselines run in between, on
the same hub, with the same payload and the same number of receivers: core NATS (publish and
reply, nothing persisted) and the JetStream floor (one stream configured as DESIRED, one
durable pull consumer per receiver, each message fetched and acknowledged), so each ratio
compares measurements taken seconds apart on the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.convergence import (
    LEAF_EDGES,
    Convergence,
    Fleet,
    cluster_task_bytes,
    converge,
    jetstream_fanout,
    raw_fanout,
    raw_responders,
    running_fleet,
)
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import HubFailed
from bench.report import format_quantity
from bench.summary import percentile, ratio, spread

KEY = "P1"
TITLE = "Convergence: publish → applied on every cluster (100 and 1,000 clusters)"
TARGETS = [
    Target(metric="p99_s", label="p99 at 1,000 clusters", bound=2.0, unit="s"),
    Target(metric="ratio_to_raw", label="p99 ratio to raw NATS at 1,000", bound=3.0, unit="x"),
    Target(
        metric="ratio_to_jetstream",
        label="p99 ratio to the JetStream floor at 1,000",
        bound=3.0,
        unit="x",
    ),
]
TARGET_SIZE = 1000
"""The size the targets are set at; the headline keys of results.json are measured there."""
WARMUP_S = 120.0
RUN_S = 60.0


@dataclass
class SizeResult:
    ours: list[list[float]] = field(default_factory=list)
    raw: list[list[float]] = field(default_factory=list)
    jetstream: list[list[float]] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    failure: str = ""
    """Why the measurement stopped early (a version not applied everywhere in time)."""


def _missing(fleet: Fleet, run: Convergence, within: float) -> str:
    late = sorted(fleet.clusters - set(run.applied))
    shown = ", ".join(late[:5]) + (", …" if len(late) > 5 else "")
    return (
        f"{len(run.latencies)} of {run.expected} clusters applied version {fleet.versions} "
        f"within {within:.0f} s (missing: {shown})"
    )


async def measure(clusters: int, repeats: int) -> SizeResult:
    """Per run: the fleet's latencies and the raw baseline's, `repeats` runs each."""
    result = SizeResult()
    async with running_fleet(clusters) as fleet:
        first = await converge(fleet, within=WARMUP_S)
        if not first.complete:
            result.failure = "warm-up: " + _missing(fleet, first, WARMUP_S)
            result.stages = first.stages
            return result
        credentials = fleet.hub.data.hub_credentials
        async with (
            raw_responders(fleet.hub.nats_url, credentials, clusters),
            raw_responders(fleet.hub.nats_url, credentials, clusters, mode="jetstream"),
        ):
            for _ in range(repeats):
                run = await converge(fleet, within=RUN_S)
                for stage, values in run.stages.items():
                    result.stages.setdefault(stage, []).extend(values)
                if not run.complete:
                    result.failure = _missing(fleet, run, RUN_S)
                    return result
                result.ours.append(run.latencies)
                payload = cluster_task_bytes(fleet.source, "sim-1", fleet.versions)
                result.raw.append(
                    await raw_fanout(fleet.hub.nats_url, credentials, payload, clusters)
                )
                result.jetstream.append(
                    await jetstream_fanout(fleet.hub.nats_url, credentials, payload, clusters)
                )
    return result


def size_metrics(
    clusters: int,
    ours: list[list[float]],
    raw: list[list[float]],
    jetstream: list[list[float]],
) -> list[Metric]:
    pooled = [x for run in ours for x in run]
    pooled_raw = [x for run in raw for x in run]
    pooled_js = [x for run in jetstream for x in run]
    ours_spread = spread(pooled)
    raw_spread = spread(pooled_raw)
    js_spread = spread(pooled_js)
    suffix = f"_{clusters}"
    at = f"{clusters:,} clusters"
    return [
        Metric(
            key=f"p50_s{suffix}",
            label=f"p50 publish → applied, {at}",
            unit="s",
            value=ours_spread.p50,
            samples=ours_spread,
            runs=[percentile(run, 50) for run in ours],
        ),
        Metric(
            key=f"p99_s{suffix}",
            label=f"p99 publish → applied, {at}",
            unit="s",
            value=ours_spread.p99,
            runs=[percentile(run, 99) for run in ours],
        ),
        Metric(
            key=f"max_s{suffix}",
            label=f"last cluster applied, {at}",
            unit="s",
            value=ours_spread.max,
            runs=[max(run) for run in ours],
        ),
        Metric(
            key=f"raw_p99_s{suffix}",
            label=f"raw NATS publish → reply, p99, {at}",
            unit="s",
            value=raw_spread.p99,
            samples=raw_spread,
            runs=[percentile(run, 99) for run in raw],
        ),
        Metric(
            key=f"ratio_p50{suffix}",
            label=f"p50 ratio to raw NATS, {at}",
            unit="x",
            value=ratio(ours_spread.p50, raw_spread.p50),
        ),
        Metric(
            key=f"ratio_p99{suffix}",
            label=f"p99 ratio to raw NATS, {at}",
            unit="x",
            value=ratio(ours_spread.p99, raw_spread.p99),
        ),
        Metric(
            key=f"jetstream_p99_s{suffix}",
            label=f"JetStream floor: stored → fetched and acked, p99, {at}",
            unit="s",
            value=js_spread.p99,
            samples=js_spread,
            runs=[percentile(run, 99) for run in jetstream],
        ),
        Metric(
            key=f"ratio_js_p50{suffix}",
            label=f"p50 ratio to the JetStream floor, {at}",
            unit="x",
            value=ratio(ours_spread.p50, js_spread.p50),
        ),
        Metric(
            key=f"ratio_js_p99{suffix}",
            label=f"p99 ratio to the JetStream floor, {at}",
            unit="x",
            value=ratio(ours_spread.p99, js_spread.p99),
        ),
    ]


STAGES = {
    "scheduled": "publish → ClusterTaskScheduled stored (scheduler)",
    "desired": "→ ClusterTask stored in DESIRED (scheduler)",
    "applied": "→ TaskApplied on the cluster (delivery, apply)",
    "reported": "→ report stored in the hub's REPORTS (publish; sourcing for leaf edges)",
}


def stage_note(clusters: int, stages: dict[str, list[float]]) -> str:
    """Where the time went at one size, from the stored events' own timestamps."""
    parts = []
    for stage, label in STAGES.items():
        values = stages.get(stage) or []
        if values:
            parts.append(
                f"{label}: p50 {format_quantity(percentile(values, 50), 's')}, "
                f"p99 {format_quantity(percentile(values, 99), 's')}"
            )
    return f"Where the time goes at {clusters:,} clusters: " + "; ".join(parts) + "."


BOUNDS = (
    "What bounds the rest: every process of the loop shares two cores (nats-server, the hub "
    "with its projector and API, the scheduler, the simulated clusters, the four leaf edges), "
    "and at these sizes the simulated clusters run inside the hub process. The scheduler's "
    "part is the smaller one (a decision's events appended and its ClusterTasks written "
    "pipelined, 512 clusters per chunk, see the stage figures above); most of the time is "
    "delivery and apply: N pull consumers served by nats-server and N simulated connectors "
    "(decode, apply, publish the report, acknowledge) in one Python process, while the raw "
    "baseline's subscribers do nothing but reply to one publish each. In a real fleet each "
    "cluster's connector runs on its own cluster. Once its simulated clusters are connected "
    "the hub process freezes what it holds out of Python's garbage collector and collects "
    "less often (`simulator.heap`); before, with 1,000 client sims, about half of the hub "
    "process's CPU during an update went to collections walking every sim's objects. Raw "
    "JetStream fan-out at 1,000 consumers costs the same whether each is filtered on its "
    "cluster's wildcard or on one literal subject, or spread over 8 or 16 streams "
    "(`python -m bench.desired_fanout`): the wildcard walk that bounds P2 is not what bounds "
    "P1."
)


async def run(mode: Mode) -> FigureResult:
    sizes = (100,) if mode.quick else (100, 1000)
    metrics: list[Metric] = []
    failures: dict[int, str] = {}
    stage_notes: list[str] = []
    headline: dict[str, float | None] = {}
    for clusters in sizes:
        try:
            result = await measure(clusters, mode.repeats)
        except HubFailed as e:
            failures[clusters] = str(e).splitlines()[0]
            continue
        if result.stages:
            stage_notes.append(stage_note(clusters, result.stages))
        if result.failure:
            failures[clusters] = result.failure
            continue
        found = size_metrics(clusters, result.ours, result.raw, result.jetstream)
        metrics += found
        by_key = {m.key: m.value for m in found}
        headline = {
            "clusters": clusters,
            "p50_s": by_key[f"p50_s_{clusters}"],
            "p99_s": by_key[f"p99_s_{clusters}"],
            "ratio_to_raw": by_key[f"ratio_p99_{clusters}"],
            "ratio_to_jetstream": by_key[f"ratio_js_p99_{clusters}"],
        }
    largest = TARGET_SIZE
    missing = ""
    if mode.quick:
        missing = "quick mode runs 100 clusters only"
    elif largest in failures:
        missing = f"not measured at {largest:,} clusters: {failures[largest]}"
    at_largest = headline.get("clusters") == largest
    metrics = [
        Metric(
            key="p99_s",
            label=f"p99 publish → applied at {largest:,} clusters",
            unit="s",
            value=headline.get("p99_s") if at_largest else None,
            missing=missing,
        ),
        Metric(
            key="p50_s",
            label=f"p50 publish → applied at {largest:,} clusters",
            unit="s",
            value=headline.get("p50_s") if at_largest else None,
            missing=missing,
        ),
        Metric(
            key="ratio_to_raw",
            label=f"p99 ratio to raw NATS at {largest:,} clusters",
            unit="x",
            value=headline.get("ratio_to_raw") if at_largest else None,
            missing=missing,
        ),
        Metric(
            key="ratio_to_jetstream",
            label=f"p99 ratio to the JetStream floor at {largest:,} clusters",
            unit="x",
            value=headline.get("ratio_to_jetstream") if at_largest else None,
            missing=missing,
        ),
        *metrics,
    ]
    notes = [f"Not measured at {n:,} clusters: {why}" for n, why in failures.items()]
    notes += stage_notes
    notes.append(BOUNDS)
    method = (
        f"Sizes: {', '.join(f'{n:,}' for n in sizes)} clusters, each on a fresh hub: "
        f"`fleetbus up --no-scheduler --sim-clusters N-{LEAF_EDGES}` (simulated clusters in "
        "the hub process, each a NATS client of the hub with its own credentials and durable "
        "consumer, publishing its reports straight into REPORTS), "
        f"{LEAF_EDGES} clusters registered with `fleetbus cluster register` and run as "
        "`fleetbus edge --sim` processes behind their own leaf nats-server, and "
        "`fleetbus scheduler` (the one scheduler, in a process of its own). One warm-up "
        "version, then "
        f"{mode.repeats} measured version(s), each published with `publish_taskset` (what "
        "`fleetbus publish` calls) to a selector matching every cluster; a cluster's latency "
        "is from just before the publish to its TaskApplied for that version arriving in the "
        "hub's REPORTS stream. Raw baseline, after each run on the same hub: the same "
        "ClusterTask bytes published with core NATS to N subscriptions (N connections in one "
        "process), each replying `applied`, timed from the first publish to each reply. "
        "JetStream floor, right after: the same bytes written (pipelined, each acknowledged) "
        "once per receiver into a stream configured as DESIRED, each receiver (N connections "
        "in one process) reading its own durable pull consumer filtered on its subject, "
        "fetching and acknowledging the message, then announcing it with a core publish; "
        "timed from the first write to each announcement. "
        "Percentiles pool every cluster of every run."
    )
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra={"clusters": TARGET_SIZE if at_largest else None, "sizes": list(sizes)},
    )
