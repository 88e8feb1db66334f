"""P14 — what holds the hub's memory at 10,000 clusters (tracemalloc).

P6's footprint run again (10,000 clusters registered through the log, a taskset scheduled to all
of them by `fleetbus scheduler`), with the hub process and the scheduler under tracemalloc
(`bench.traced`, one frame per allocation). Once DESIRED holds every ClusterTask, each writes a
snapshot; the figures are the memory Python allocated and still holds (traced), and the lines
of code holding the most of it. Tracing slows both processes and adds its own bookkeeping to
their resident size, so their resident sizes are P6's (untraced); nats-server is not Python
and is not traced.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

from bench.figure import FULL, FigureResult, Metric, Mode, Target
from bench.hubproc import REPO, HubFailed
from bench.p6_hub_footprint import CLUSTERS, QUICK_FOOTPRINT, hub_footprint

KEY = "P14"
TITLE = "Hub memory at 10,000 clusters: what holds it"
TARGETS: list[Target] = []
TOP = 8


def place(filename: str) -> str:
    """A traced file, shorter: relative to the repository, or to its site-packages."""
    path = Path(filename)
    if path.is_relative_to(REPO) and ".venv" not in path.parts:
        return str(path.relative_to(REPO))
    parts = path.parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return "/".join(parts[-2:])


def top_lines(snapshot: tracemalloc.Snapshot, count: int = TOP) -> tuple[float, list[str]]:
    """MiB traced in all, and the `count` lines holding the most, as readable entries."""
    stats = snapshot.statistics("lineno")
    total = sum(stat.size for stat in stats) / (1024 * 1024)
    lines = []
    for stat in stats[:count]:
        frame = stat.traceback[0]
        lines.append(
            f"`{place(frame.filename)}:{frame.lineno}` {stat.size / (1024 * 1024):.1f} MiB "
            f"({stat.count:,} blocks)"
        )
    return total, lines


async def run(mode: Mode) -> FigureResult:
    clusters = mode.clusters or (QUICK_FOOTPRINT if mode.quick else CLUSTERS)
    notes: list[str] = []
    metrics: list[Metric] = []
    failure = ""
    traced: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fleetbus-bench-trace-") as tmp:
        trace_dir = Path(tmp)
        try:
            measured = await hub_footprint(FULL, clusters, trace_dir=trace_dir)
            for name, label in (("hub", "`fleetbus up` process"), ("scheduler", "scheduler")):
                snapshot = tracemalloc.Snapshot.load(str(trace_dir / f"{name}.snapshot"))
                total, lines = top_lines(snapshot)
                traced[name] = total
                notes.append(
                    f"{label}: {total:,.0f} MiB traced; the lines holding the most: "
                    + "; ".join(lines)
                    + "."
                )
            traced["hub_rss"] = measured["hub_process_rss"]
            traced["scheduler_rss"] = measured["scheduler_rss"]
        except HubFailed as e:
            failure = str(e).splitlines()[0]
    for key, label in (
        ("hub", f"Python memory held by the `fleetbus up` process, {clusters:,} clusters"),
        ("scheduler", f"Python memory held by `fleetbus scheduler`, {clusters:,} clusters"),
        ("hub_rss", "`fleetbus up` process RSS while traced"),
        ("scheduler_rss", "`fleetbus scheduler` RSS while traced"),
    ):
        metrics.append(
            Metric(
                key=f"{key}_mb",
                label=label,
                unit="MB",
                value=traced.get(key),
                missing=failure,
            )
        )
    if failure:
        notes.insert(0, f"Not measured: {failure}")
    method = (
        f"P6's footprint run at {clusters:,} clusters with the hub process and the scheduler "
        "under tracemalloc (one frame per allocation); snapshots taken once DESIRED holds every "
        "ClusterTask and the hub has idled 15 s."
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
