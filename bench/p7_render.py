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
on the machine hits both alike; the headline is the median of the ratios of each pair.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import helm_python

from bench.figure import FigureResult, Metric, Mode, Target
from bench.summary import median
from normalizer import helm as helm_adapter

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


def helm_render_seconds(archive: bytes) -> float:
    started = time.perf_counter()
    with helm_python.Chart.load_archive(archive) as chart:
        chart.render({}, name=RELEASE, namespace=RELEASE, is_install=True)
    return time.perf_counter() - started


def fleetbus_render_seconds(archive: bytes, *, cold: bool) -> float:
    if cold:
        helm_adapter.forget_chart_caches()
    started = time.perf_counter()
    helm_adapter.render_archive(archive, {}, name=RELEASE, namespace=RELEASE)
    return time.perf_counter() - started


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
    for _ in range(pairs):
        helm = helm_render_seconds(archive)
        cold = fleetbus_render_seconds(archive, cold=True)
        warm = fleetbus_render_seconds(archive, cold=False)
        helm_s.append(helm)
        cold_s.append(cold)
        warm_s.append(warm)
        cold_ratio.append(cold / helm)
        warm_ratio.append(warm / helm)
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
            "Cold clears the parsed-CRD cache before each render; warm re-renders at once."
        ),
        notes=[
            "Where the time goes: the chart's crds/ are 4.5 MB of YAML (ten Prometheus "
            "operator CRDs); reading them is most of a cold render, which is why a warm "
            "re-render is so much cheaper. The Helm engine's render does not read them at all.",
        ],
    )
