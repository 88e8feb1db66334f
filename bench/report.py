"""BENCHMARKS.md and bench/results.json from one run's figures: pure rendering, then one write.

results.json always carries every key the figures promise (None when not measured), so tools
reading it never have to guess whether a key was forgotten or a number is missing. The Markdown
puts the target verdicts first, each figure's method and findings after, and the published
figures of other projects last, marked as their hardware.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from bench.figure import FigureResult, Metric, format_number
from bench.machine import MachineInfo
from bench.published import PublishedFigure

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "P1": ("clusters", "p50_s", "p99_s", "ratio_to_raw"),
    "P2": ("clusters", "all_applied_s"),
    "P3": ("p50_s", "p99_s", "ratio_to_watch"),
    "P4": ("append_per_s", "fold_per_s", "replay_per_s", "replay_events"),
    "P5": ("rss_mb", "idle_cpu_pct"),
    "P6": ("hub_rss_mb", "recompute_s"),
    "P7": ("render_ratio", "help_ratio"),
    "P10": ("state_at_snapshot_s", "state_at_replay_s", "replay_to_snapshot_ratio"),
    "P11": ("archive_per_s", "read_archived_per_s", "read_live_per_s"),
}
"""The keys results.json has for each figure, measured or not."""


class RunReport(msgspec.Struct, frozen=True, kw_only=True):
    mode: str
    started_at: str
    duration_s: float
    machine: MachineInfo
    figures: list[FigureResult]


def format_quantity(value: float | None, unit: str) -> str:
    """A value with its unit, readable: seconds below one become milliseconds."""
    if value is None:
        return "—"
    if unit == "s" and abs(value) < 1.0:
        millis = value * 1000.0
        return f"{millis:.1f} ms" if abs(millis) < 10 else f"{millis:.0f} ms"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.2f} %"
    if unit in ("", "events", "clusters"):
        return format_number(value) + (f" {unit}" if unit else "")
    return f"{format_number(value)} {unit}"


def figure_document(figure: FigureResult) -> dict[str, Any]:
    """The results.json entry of one figure."""
    doc: dict[str, Any] = {key: None for key in REQUIRED_KEYS.get(figure.key, ())}
    for metric in figure.metrics:
        doc[metric.key] = metric.value
    doc.update(figure.extra)
    doc["title"] = figure.title
    doc["measured"] = not figure.not_measured
    if figure.not_measured:
        doc["not_measured"] = figure.not_measured
    missing = {m.key: m.missing for m in figure.metrics if m.value is None and m.missing}
    if missing:
        doc["missing"] = missing
    runs = {m.key: m.runs for m in figure.metrics if m.runs}
    if runs:
        doc["runs"] = runs
        doc["runs_summary"] = {
            m.key: msgspec.to_builtins(m.run_spread) for m in figure.metrics if m.runs
        }
    samples = {m.key: msgspec.to_builtins(m.samples) for m in figure.metrics if m.samples}
    if samples:
        doc["samples"] = samples
    doc["targets"] = [
        {
            "metric": target.metric,
            "target": target.condition,
            "value": value,
            "verdict": verdict,
        }
        for target, value, verdict in figure.verdicts()
    ]
    doc["seconds"] = round(figure.seconds, 1)
    return doc


def results_document(report: RunReport) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "mode": report.mode,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 1),
        "machine": msgspec.to_builtins(report.machine),
    }
    by_key = {figure.key: figure for figure in report.figures}
    for key in REQUIRED_KEYS:
        figure = by_key.get(key)
        if figure is None:
            doc[key] = {k: None for k in REQUIRED_KEYS[key]} | {
                "measured": False,
                "not_measured": "not run in this invocation",
            }
        else:
            doc[key] = figure_document(figure)
    for figure in report.figures:
        if figure.key not in doc:
            doc[figure.key] = figure_document(figure)
    return doc


def _machine_table(machine: MachineInfo) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in machine.load_average)
    return [
        "| | |",
        "|---|---|",
        f"| CPU | {machine.cpu_model} |",
        f"| cores | {machine.cores} (usable by the run: {machine.usable_cores}) |",
        f"| memory | {machine.memory_gib:.1f} GiB |",
        f"| Python | {machine.python} |",
        f"| nats-server | {machine.nats_server} |",
        f"| nats-py | {machine.nats_py} |",
        f"| kernel | {machine.kernel} |",
        f"| load average at start (1, 5, 15 min) | {load} |",
        f"| commit | {machine.commit} |",
    ]


def _summary_table(figures: Sequence[FigureResult]) -> list[str]:
    lines = ["| figure | target | ours | verdict |", "|---|---|---|---|"]
    for figure in figures:
        for target, value, verdict in figure.verdicts():
            metric = figure.metric(target.metric)
            unit = metric.unit if metric is not None else target.unit
            shown = format_quantity(value, unit)
            if value is None:
                reason = figure.not_measured or (metric.missing if metric else "")
                shown = f"not measured: {reason}" if reason else "not measured"
            mark = {"met": "met", "missed": "**missed**", "not measured": "—"}[verdict]
            lines.append(f"| {figure.key} | {target.label} {target.condition} | {shown} | {mark} |")
    return lines


def _metric_row(metric: Metric) -> str:
    value = format_quantity(metric.value, metric.unit)
    if metric.value is None:
        value = f"not measured: {metric.missing}" if metric.missing else "not measured"
    detail = ""
    if metric.samples is not None:
        s = metric.samples
        detail = (
            f"n={s.n}: p50 {format_quantity(s.p50, metric.unit)}, "
            f"p90 {format_quantity(s.p90, metric.unit)}, "
            f"p99 {format_quantity(s.p99, metric.unit)}, "
            f"max {format_quantity(s.max, metric.unit)}"
        )
    spread = metric.run_spread
    if spread is not None and spread.n > 1:
        runs = (
            f"{spread.n} runs: median {format_quantity(spread.p50, metric.unit)}, "
            f"p99 {format_quantity(spread.p99, metric.unit)}, "
            f"min {format_quantity(spread.min, metric.unit)}, "
            f"max {format_quantity(spread.max, metric.unit)}"
        )
        detail = f"{detail}; {runs}" if detail else runs
    return f"| {metric.label} | {value} | {detail} |"


def _figure_section(figure: FigureResult) -> list[str]:
    lines = [f"## {figure.key} — {figure.title}", ""]
    if figure.not_measured:
        lines += [f"**Not measured:** {figure.not_measured}", ""]
    if figure.method:
        lines += [figure.method.strip(), ""]
    if figure.metrics:
        lines += ["| metric | value | distribution |", "|---|---|---|"]
        lines += [_metric_row(metric) for metric in figure.metrics]
        lines.append("")
    if figure.notes:
        lines += [f"- {note}" for note in figure.notes]
        lines.append("")
    if figure.seconds:
        lines += [f"_Ran for {figure.seconds:.0f} s._", ""]
    return lines


def _ours_for(figures: Sequence[FigureResult], key: str) -> str:
    for figure in figures:
        if figure.key != key:
            continue
        if figure.not_measured:
            return "not measured"
        shown = [
            f"{m.label}: {format_quantity(m.value, m.unit)}"
            for m in figure.metrics
            if m.value is not None
        ]
        return "; ".join(shown[:3]) or "not measured"
    return "not run"


def _published_table(
    published: Sequence[PublishedFigure], figures: Sequence[FigureResult]
) -> list[str]:
    lines = [
        "| project | what they measured | their figure | their scale | their hardware "
        "| ours (this machine) | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in published:
        ours = f"{item.closest}: {_ours_for(figures, item.closest)}"
        lines.append(
            f"| {item.project} | {item.what} | {item.value} | {item.scale} | {item.hardware} "
            f"| {ours} | <{item.source}> |"
        )
    return lines


def render_markdown(report: RunReport, published: Sequence[PublishedFigure]) -> str:
    quick = report.mode == "quick"
    lines = [
        "# fleetbus benchmarks",
        "",
        f"Generated by `python -m bench --{report.mode}` "
        f"({'`make bench-quick`' if quick else '`make bench`'}) at {report.started_at}; "
        f"the run took {report.duration_s / 60:.1f} min. Every number below was measured in "
        "that run on the machine described here; ratios compare two measurements taken in the "
        "same run. Figures that could not be measured say why instead of showing a number.",
        "",
    ]
    if quick:
        lines += [
            "> **Quick mode:** smaller sizes and one repetition, to check the benchmarks work. "
            "Run `make bench` for the figures to quote.",
            "",
        ]
    lines += ["## Machine", "", *_machine_table(report.machine), ""]
    lines += ["## Targets", "", *_summary_table(report.figures), ""]
    for figure in report.figures:
        lines += _figure_section(figure)
    lines += [
        "## Beside published figures of other projects",
        "",
        "Their numbers were measured on **their hardware** with their own workloads and "
        "definitions (listed per row); ours on the machine above. They orient, they do not "
        "rank: a fleet manager's latency depends on what it delivers and where it runs.",
        "",
        *_published_table(published, report.figures),
        "",
        "## Reproducing",
        "",
        "`make bench` (about 20 minutes) or `make bench-quick` (about 3 minutes) runs "
        "`python -m bench` and rewrites this file and `bench/results.json`. "
        "`python -m bench --quick --only P4` runs one figure; `--clusters N` runs the "
        "fleet-size figures (P2, P13, P14) at N clusters, `--merge` puts the figures run into "
        "this file. Run on a quiet machine: the figures share its cores with everything else "
        "running.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(
    report: RunReport, published: Sequence[PublishedFigure], markdown: Path, results: Path
) -> None:
    results.write_bytes(
        orjson.dumps(results_document(report), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        + b"\n"
    )
    markdown.write_text(render_markdown(report, published))


def merge_outputs(report: RunReport, markdown: Path, results: Path) -> None:
    """Put `report`'s figures into an existing report, leaving every other figure as it was.

    For a figure measured alone (`python -m bench --only P7 --merge`): its results.json entry,
    its rows of the targets table and its section are replaced (or added); the machine table
    and the other figures keep what their own run measured. Its section says when it ran.
    """
    document = orjson.loads(results.read_bytes()) if results.exists() else {}
    lines = markdown.read_text().splitlines() if markdown.exists() else []
    for figure in report.figures:
        document[figure.key] = figure_document(figure)
        noted = msgspec.structs.replace(
            figure,
            notes=[
                *figure.notes,
                f"Measured alone with `python -m bench --{report.mode} --only {figure.key} "
                f"--merge` at {report.started_at} (load average "
                f"{report.machine.load_average[0]:.2f}); the other figures are from their own run.",
            ],
        )
        lines = _merged_lines(lines, noted)
    results.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    markdown.write_text("\n".join(lines) + "\n")


_TARGET_ROW = re.compile(r"^\| P\d+ \|")
"""A row of the targets table (`| P6 | …`), not any table row that starts with a P."""


def _merged_lines(lines: list[str], figure: FigureResult) -> list[str]:
    rows = _summary_table([figure])[2:]
    kept = [line for line in lines if not line.startswith(f"| {figure.key} |")]
    targets = [i for i, line in enumerate(kept) if _TARGET_ROW.match(line)]
    at = targets[-1] + 1 if targets else len(kept)
    kept[at:at] = rows
    section = _figure_section(figure)
    start = next((i for i, line in enumerate(kept) if line.startswith(f"## {figure.key} — ")), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(kept)) if kept[i].startswith("## ")), len(kept))
        kept[start:end] = section
        return kept
    before = next(
        (i for i, line in enumerate(kept) if line.startswith("## Beside published figures")),
        len(kept),
    )
    kept[before:before] = section
    return kept
