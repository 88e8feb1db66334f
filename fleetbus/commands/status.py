"""`fleetbus status [TASKSET]`: per cluster, what it should run, what it runs, and how it is.

Reads the hub's projection through its API (`GET /api/v1/status`). `--watch` keeps reading it
every `--interval` seconds and prints it again each time it changed (JSON as one document per
line, YAML as `---`-separated documents) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from contextlib import redirect_stdout
from typing import Any

import msgspec
import orjson

from fleetbus.client import HubClient, add_hub_options
from fleetbus.options import positive_seconds
from fleetbus.output import Column, add_output_option, emit, when
from fleetbus.source_options import provenance_text
from projector.queries import RolloutRow, StatusRow
from taskset.selectors import Selector, parse_selector


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="desired and applied state per cluster",
        description="Per taskset and cluster: the desired version, the applied version, the "
        "state (pending, applied, failed, drifted, ...), drift seen and why something failed; "
        "then each rollout's progress.",
    )
    parser.add_argument("taskset", nargs="?", default=None, help="only this taskset")
    parser.add_argument(
        "-l",
        "--selector",
        default="",
        metavar="SELECTOR",
        help="only clusters whose labels match (env=prod,tier!=edge,region in (eu,us),gpu)",
    )
    add_output_option(parser)
    parser.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="keep watching: print the status again whenever it changes (Ctrl-C stops)",
    )
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="how often --watch reads the status (default 2)",
    )
    add_hub_options(parser)
    parser.set_defaults(handler=handle)


def version_text(version: int | None, generation: int | None) -> str:
    if version is None:
        return "-"
    return f"v{version}" + (f" (gen {generation})" if generation is not None else "")


STATUS_COLUMNS = [
    Column("TASKSET", lambda r: r.taskset),
    Column("CLUSTER", lambda r: r.cluster),
    Column(
        "DESIRED",
        lambda r: "removed" if r.removed else version_text(r.desired_version, r.desired_generation),
    ),
    Column("APPLIED", lambda r: version_text(r.applied_version, r.applied_generation)),
    Column("STATE", lambda r: r.state),
    Column("DRIFT", lambda r: r.drift_count),
    Column(
        "DETAIL",
        lambda r: r.error or (f"overrides: {', '.join(r.overrides)}" if r.overrides else ""),
    ),
    Column("WAVE", lambda r: None if r.wave is None else r.wave + 1, wide=True),
    Column("LAST-REPORT", lambda r: when(r.last_report_at), wide=True),
    Column("DIGEST", lambda r: (r.applied_digest or "")[7:19], wide=True),
]


def render(status: dict[str, Any], output: str, *, watching: bool = False) -> str:
    rows = msgspec.convert(status["cells"], list[StatusRow])
    progress = [
        RolloutRow(taskset=taskset["name"], **taskset["rollout"])
        for taskset in status["tasksets"]
        if taskset["rollout"] is not None
    ]
    origins = {
        taskset["name"]: (taskset["version"], taskset["provenance"])
        for taskset in status["tasksets"]
        if taskset.get("provenance")
    }
    document: dict[str, Any] = {
        "status": msgspec.to_builtins(rows),
        "rollouts": msgspec.to_builtins(progress),
    }
    if origins:
        document["provenance"] = {name: origin for name, (_, origin) in origins.items()}
    if output == "json" and watching:
        return orjson.dumps(document).decode() + "\n"
    text = io.StringIO()
    with redirect_stdout(text):
        if output in ("json", "yaml"):
            if watching:
                print("---")
            emit(document, output)
        else:
            emit(document, output, rows=rows, columns=STATUS_COLUMNS)
            for name, (version, origin) in sorted(origins.items()):
                print(f"source of {name} v{version}: {provenance_text(origin)}")
            for rollout in progress:
                failed = f"; failed: {', '.join(rollout.failed)}" if rollout.failed else ""
                print(
                    f"rollout {rollout.taskset} v{rollout.version}: {rollout.state}, wave "
                    f"{rollout.wave + 1}/{rollout.total_waves}, {rollout.applied}/"
                    f"{rollout.targets} applied{failed}"
                )
    return text.getvalue()


def of_clusters(status: dict[str, Any], wanted: Selector | None) -> dict[str, Any]:
    """The status of the clusters whose labels match `wanted` only (all without one)."""
    if wanted is None:
        return status
    names = {c["name"] for c in status["clusters"] if wanted.matches(c.get("labels") or {})}
    return {
        **status,
        "clusters": [c for c in status["clusters"] if c["name"] in names],
        "cells": [cell for cell in status["cells"] if cell["cluster"] in names],
    }


def handle(args: argparse.Namespace) -> int:
    wanted = parse_selector(args.selector) if args.selector else None
    client = HubClient.from_args(args)

    def read() -> dict[str, Any]:
        return of_clusters(client.get("/api/v1/status", {"taskset": args.taskset}), wanted)

    if not args.watch:
        sys.stdout.write(render(read(), args.output))
        return 0
    shown = ""
    while True:
        text = render(read(), args.output, watching=True)
        if text != shown:
            if shown and args.output in ("table", "wide"):
                print()
            sys.stdout.write(text)
            sys.stdout.flush()
            shown = text
        time.sleep(args.interval)
