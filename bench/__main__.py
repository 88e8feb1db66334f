"""`python -m bench --full|--quick [--only P1,P4]`: run the figures, write the report.

Each figure runs in its own event loop, one after the other, so one figure's leftovers never
slow the next. A figure that raises is reported as failed (with its traceback on stderr) and
the run exits non-zero; a figure whose component does not exist yet is reported as not measured,
which is not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench import (
    p1_convergence,
    p2_convergence_10k,
    p3_drift,
    p4_log,
    p5_connector_footprint,
    p6_hub_footprint,
    p7_render,
    p8_blueprint,
    p9_reads,
    p10_snapshots,
    p11_archive,
    p13_dashboard,
    p14_hub_memory,
    p15_delivery_r3,
)
from bench.figure import FULL, QUICK, FigureResult, Mode, Target
from bench.machine import collect
from bench.published import PUBLISHED
from bench.report import RunReport, format_quantity, merge_outputs, write_outputs

REPO = Path(__file__).resolve().parent.parent

FigureRun = Callable[[Mode], Coroutine[Any, Any, FigureResult]]

FIGURES: dict[str, tuple[str, list[Target], FigureRun]] = {
    module.KEY: (module.TITLE, module.TARGETS, module.run)
    for module in (
        p1_convergence,
        p2_convergence_10k,
        p3_drift,
        p4_log,
        p5_connector_footprint,
        p6_hub_footprint,
        p7_render,
        p8_blueprint,
        p9_reads,
        p10_snapshots,
        p11_archive,
        p13_dashboard,
        p14_hub_memory,
        p15_delivery_r3,
    )
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--full", action="store_true", help="the sizes BENCHMARKS.md quotes")
    size.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated figures to run (e.g. P1,P4); the report files are then left "
        "alone unless --write is given",
    )
    parser.add_argument("--write", action="store_true", help="write the report even with --only")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: put the figures run into the existing BENCHMARKS.md and "
        "bench/results.json, keeping every other figure as it was",
    )
    parser.add_argument("--out", type=Path, default=REPO, help="where BENCHMARKS.md goes")
    parser.add_argument(
        "--clusters",
        type=int,
        default=0,
        help="run the fleet-size figures (P2, P13, P14, P15) at this many clusters instead "
        "of 10,000 (a figure whose target names 10,000 is then reported beside it, not judged)",
    )
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        help="a note to add to each figure run (e.g. a baseline measured by another build); "
        "may be given more than once",
    )
    args = parser.parse_args(argv)
    if args.clusters and args.clusters < 100:
        parser.error(f"--clusters {args.clusters}: at least 100")
    return args


def run_figure(key: str, mode: Mode) -> tuple[FigureResult, bool]:
    title, targets, run = FIGURES[key]
    print(f"[bench] {key} {title} ({mode.name}) …", file=sys.stderr, flush=True)
    started = time.monotonic()
    result: FigureResult
    try:
        result = asyncio.run(run(mode))
        ok = True
    except Exception as e:  # noqa: BLE001 - a broken figure must not hide the others
        traceback.print_exc()
        result = FigureResult(
            key=key,
            title=title,
            targets=targets,
            not_measured=f"the run failed: {type(e).__name__}: {e}",
        )
        ok = False
    result = msgspec.structs.replace(result, seconds=time.monotonic() - started)
    for metric in result.metrics:
        shown = format_quantity(metric.value, metric.unit)
        if metric.value is None:
            shown = f"not measured ({metric.missing})"
        print(f"[bench]   {metric.label}: {shown}", file=sys.stderr, flush=True)
    if result.not_measured:
        print(f"[bench]   not measured: {result.not_measured}", file=sys.stderr, flush=True)
    for note in result.notes:
        if note.startswith(("Where the time goes", "Not measured")):
            print(f"[bench]   {note}", file=sys.stderr, flush=True)
    print(f"[bench]   {result.seconds:.0f} s", file=sys.stderr, flush=True)
    return result, ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mode = QUICK if args.quick else FULL
    if args.clusters:
        mode = dataclasses.replace(mode, clusters=args.clusters)
    keys = [k.strip().upper() for k in args.only.split(",") if k.strip()] or list(FIGURES)
    unknown = [k for k in keys if k not in FIGURES]
    if unknown:
        print(f"unknown figure(s): {', '.join(unknown)}; known: {', '.join(FIGURES)}")
        return 2
    machine = collect(REPO)
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    started = time.monotonic()
    results: list[FigureResult] = []
    all_ok = True
    for key in keys:
        result, ok = run_figure(key, mode)
        if args.note:
            result = msgspec.structs.replace(result, notes=[*result.notes, *args.note])
        results.append(result)
        all_ok = all_ok and ok
    report = RunReport(
        mode=mode.name,
        started_at=started_at,
        duration_s=time.monotonic() - started,
        machine=machine,
        figures=results,
    )
    if args.only and args.merge:
        markdown = args.out / "BENCHMARKS.md"
        results_json = args.out / "bench" / "results.json"
        merge_outputs(report, markdown, results_json)
        print(
            f"[bench] merged {', '.join(keys)} into {markdown} and {results_json}", file=sys.stderr
        )
    elif not args.only or args.write:
        markdown = args.out / "BENCHMARKS.md"
        results_json = args.out / "bench" / "results.json"
        results_json.parent.mkdir(parents=True, exist_ok=True)
        write_outputs(report, PUBLISHED, markdown, results_json)
        print(f"[bench] wrote {markdown} and {results_json}", file=sys.stderr)
    print(f"[bench] done in {report.duration_s / 60:.1f} min", file=sys.stderr)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
