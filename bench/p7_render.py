"""P7 — Rendering a real chart, and starting the CLI, against what they cannot be faster than.

Two ratios, both measured in one run on the same machine:

- normalizing the largest chart of the corpus (kube-prometheus-stack with its subcharts, from
  its archive: Helm's render, Helm's document split, Kubernetes YAML semantics, CRDs, phases,
  ordering) ÷ the Helm engine's own load and render of the same archive. fleetbus's time is
  taken cold (the first render in a process: the chart's `crds/` are read) and warm (a
  re-render of the same archive with other values, as per-cluster overrides do: the CRDs are
  already read). Packaging a chart directory into its reproducible archive, which `fleetbus
  render DIR` does first, is measured on its own;
- `fleetbus --help` wall time ÷ `python -c pass`: what the command line costs before it does
  anything, in fresh processes.

Each measurement alternates the two sides (Helm, fleetbus, Helm, ...) so load from other work
on the machine hits both alike; the headline is the median of the ratios of each pair. The
same pairs are also measured in CPU time of the process (every thread, the engine's included),
which other work on a shared machine disturbs less than wall time; and the stages of a render
are timed one by one, to say what bounds the ratio.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import helm_python

from bench.figure import FigureResult, Metric, Mode, Target
from bench.summary import median
from normalizer import helm as helm_adapter
from normalizer.documents import parse_documents, parse_rendered_template

KEY = "P7"
TITLE = "Rendering the largest corpus chart; CLI start"
TARGETS = [
    Target(
        metric="render_ratio",
        label="render of kube-prometheus-stack ÷ Helm engine's render (cold)",
        bound=1.5,
        unit="x",
    ),
    Target(metric="help_ratio", label="`fleetbus --help` ÷ `python -c pass`", bound=3.0, unit="x"),
]

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "tests" / "corpus" / "charts" / "kube-prometheus-stack"
RELEASE = "monitoring"


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """Wall and process CPU seconds of `work`."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def helm_render(archive: bytes) -> dict[str, str]:
    with helm_python.Chart.load_archive(archive) as chart:
        return chart.render({}, name=RELEASE, namespace=RELEASE, is_install=True)


def helm_render_seconds(archive: bytes) -> tuple[float, float]:
    return timed(lambda: helm_render(archive))


def fleetbus_render_seconds(archive: bytes, *, cold: bool) -> tuple[float, float]:
    if cold:
        helm_adapter.forget_chart_caches()
    return timed(lambda: helm_adapter.render_archive(archive, {}, name=RELEASE, namespace=RELEASE))


def stage_seconds(archive: bytes) -> dict[str, float]:
    """CPU seconds of the stages of a cold render, each run alone, in this order."""
    stages: dict[str, float] = {}
    files: list[tuple[str, bytes]] = []
    index: list[helm_adapter.ArchiveIndex] = []
    rendered: list[dict[str, str]] = []

    def unpack() -> None:
        files.extend(helm_adapter.archive_files(archive))

    def index_files() -> None:
        index.append(helm_adapter.index_archive(files))

    def read_crds() -> None:
        contents = dict(files)
        for crd in index[0].crd_files:
            parse_documents(contents[crd.filename].decode(), crd.filename)

    def read_rendered() -> None:
        for template, text in rendered[0].items():
            if not template.endswith("/NOTES.txt"):
                parse_rendered_template(text, template)

    probe: list[bytes | None] = []
    with_copies: list[bytes] = []

    def plan_probe() -> None:
        probe.append(helm_adapter.probe_chart_archive(archive, {}))

    def render_probe() -> None:
        if probe[0] is not None:
            helm_render(probe[0])

    def plan_copies() -> None:
        source = index[0].probe
        found = (
            helm_adapter._archive_with_copies("", archive, source, {})
            if source is not None
            else None
        )
        with_copies.append(found.archive if found is not None else archive)

    stages["engine"] = timed(lambda: rendered.append(helm_render(archive)))[1]
    stages["unpack"] = timed(unpack)[1]
    stages["index"] = timed(index_files)[1]
    stages["crds"] = timed(read_crds)[1]
    stages["rendered"] = timed(read_rendered)[1]
    helm_adapter.forget_chart_caches()
    stages["copies"] = timed(plan_copies)[1]
    stages["engine_with_copies"] = timed(lambda: helm_render(with_copies[0]))[1]
    helm_adapter.forget_chart_caches()
    stages["probe_plan"] = timed(plan_probe)[1] - stages["unpack"]  # it unpacks first
    stages["probe_render"] = timed(render_probe)[1]
    return stages


def process_seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


async def run(mode: Mode) -> FigureResult:
    pairs = 3 if mode.quick else 15
    started = time.perf_counter()
    archive = helm_adapter.chart_archive_of(CHART)
    package_s = time.perf_counter() - started
    helm_render_seconds(archive)  # the engine's first load (its native library) is not timed
    helm_s, cold_s, warm_s, cold_ratio, warm_ratio = [], [], [], [], []
    cold_cpu_ratio, warm_cpu_ratio, cold_overlap = [], [], []
    stages: dict[str, list[float]] = {}
    for _ in range(pairs):
        helm, helm_cpu = helm_render_seconds(archive)
        cold, cold_cpu = fleetbus_render_seconds(archive, cold=True)
        warm, warm_cpu = fleetbus_render_seconds(archive, cold=False)
        helm_s.append(helm)
        cold_s.append(cold)
        warm_s.append(warm)
        cold_ratio.append(cold / helm)
        warm_ratio.append(warm / helm)
        cold_cpu_ratio.append(cold_cpu / helm_cpu)
        cold_overlap.append(cold_cpu / cold)
        warm_cpu_ratio.append(warm_cpu / helm_cpu)
        for stage, seconds in stage_seconds(archive).items():
            stages.setdefault(stage, []).append(seconds)
    engine, unpack, index, crds, rendered, probe_plan, probe_render = (
        median(stages[stage])
        for stage in (
            *("engine", "unpack", "index", "crds"),
            *("rendered", "probe_plan", "probe_render"),
        )
    )
    copies, engine_with_copies = (median(stages[s]) for s in ("copies", "engine_with_copies"))
    python_side = unpack + index + crds + rendered
    before_engine = unpack + index + copies
    fleetbus = Path(sys.executable).parent / "fleetbus"
    python_s, help_s, help_ratio = [], [], []
    for _ in range(pairs):
        python = process_seconds([sys.executable, "-c", "pass"])
        cli = process_seconds([str(fleetbus), "--help"])
        python_s.append(python)
        help_s.append(cli)
        help_ratio.append(cli / python)
    metrics = [
        Metric(
            key="render_ratio",
            label="render ÷ Helm, cold",
            unit="x",
            value=median(cold_ratio),
            runs=cold_ratio,
        ),
        Metric(
            key="render_warm_ratio",
            label="render ÷ Helm, warm (re-render)",
            unit="x",
            value=median(warm_ratio),
            runs=warm_ratio,
        ),
        Metric(
            key="render_cpu_ratio",
            label="render ÷ Helm in CPU time, cold",
            unit="x",
            value=median(cold_cpu_ratio),
            runs=cold_cpu_ratio,
        ),
        Metric(
            key="render_warm_cpu_ratio",
            label="render ÷ Helm in CPU time, warm",
            unit="x",
            value=median(warm_cpu_ratio),
            runs=warm_cpu_ratio,
        ),
        Metric(
            key="render_cold_overlap",
            label="cold render: CPU time of all its threads ÷ its wall time",
            unit="x",
            value=median(cold_overlap),
            runs=cold_overlap,
        ),
        Metric(
            key="helm_render_s",
            label="Helm engine: load + render",
            unit="s",
            value=median(helm_s),
            runs=helm_s,
        ),
        Metric(
            key="render_cold_s",
            label="fleetbus: archive → Taskset, cold",
            unit="s",
            value=median(cold_s),
            runs=cold_s,
        ),
        Metric(
            key="render_warm_s",
            label="fleetbus: archive → Taskset, warm",
            unit="s",
            value=median(warm_s),
            runs=warm_s,
        ),
        Metric(
            key="package_s",
            label="chart directory → reproducible archive",
            unit="s",
            value=package_s,
        ),
        Metric(
            key="help_ratio",
            label="`fleetbus --help` ÷ `python -c pass`",
            unit="x",
            value=median(help_ratio),
            runs=help_ratio,
        ),
        Metric(
            key="help_s", label="`fleetbus --help`", unit="s", value=median(help_s), runs=help_s
        ),
        Metric(
            key="python_s",
            label="`python -c pass`",
            unit="s",
            value=median(python_s),
            runs=python_s,
        ),
    ]
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=(
            f"kube-prometheus-stack from `tests/corpus` (default values, release `{RELEASE}`), "
            f"{pairs} alternating pairs per ratio in one process; the CLI in fresh processes. "
            "Cold clears the parsed-CRD and archive caches before each render; warm re-renders "
            "at once."
        ),
        notes=[
            "Where the time goes, stage by stage in CPU time (each stage alone, median): "
            f"the engine's load and render of the chart {engine * 1000:.0f} ms; unpacking the "
            f"archive {unpack * 1000:.0f} ms; indexing it {index * 1000:.0f} ms (every "
            "template's actions are read, to choose what renders twice); the archive with "
            f"copies of those templates {copies * 1000:.0f} ms, and the engine's load and "
            f"render of it {engine_with_copies * 1000:.0f} ms; reading the chart's crds/ "
            f"(4.5 MB of YAML, ten Prometheus operator CRDs) {crds * 1000:.0f} ms; reading "
            f"the rendered templates {rendered * 1000:.0f} ms. Rendering the probe chart on "
            f"its own instead, as before, costs {probe_plan * 1000:.0f} ms to build it and "
            f"{probe_render * 1000:.0f} ms of engine.",
            "What bounds the ratio: with default values this chart generates Grafana's admin "
            "password (randAlphaNum), so what differs between two renders is named "
            "(`normalizer.determinism`). The chart is rendered once with a copy of each "
            "template whose output can differ beside it (5 of 266 here; "
            "`ChartTemplates.copies`), so the engine loads the chart and merges its values "
            "once, instead of a second engine call on a probe chart. Which templates those "
            "are is known only once every template's actions are read, so on a first render "
            "the engine starts after unpacking, indexing and the copies "
            f"({before_engine * 1000:.0f} ms, holding the GIL); the crds/ are then read "
            "while the engine renders, and the rendered templates after it. The Python side "
            "(unpack, index, crds/, rendered "
            f"templates: {python_side * 1000:.0f} ms before building the Taskset) is "
            f"{python_side / engine:.2f}x the engine's render, so the CPU-time ratio cannot "
            f"go below {(python_side + copies + engine_with_copies) / engine:.2f}x; the wall "
            "time cannot go below the part before the engine, the engine's render with the "
            "copies and the reading of what it rendered "
            f"({(before_engine + engine_with_copies + rendered) / engine:.2f}x the engine's "
            "render). A re-render (warm: the index kept) starts the engine at once.",
        ],
    )
