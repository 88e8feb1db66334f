"""`fleetbus status [TASKSET]`: per cluster, what it should run, what it runs, and how it is.

Reads the hub's projection through its API (`GET /api/v1/status`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
import orjson

from fleetbus.client import HubClient, add_hub_options
from fleetbus.source_options import provenance_text
from projector.queries import RolloutRow, StatusRow


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="desired and applied state per cluster")
    parser.add_argument("taskset", nargs="?", default=None)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_hub_options(parser)
    parser.set_defaults(handler=handle)


def version_text(version: int | None, generation: int | None) -> str:
    if version is None:
        return "-"
    return f"v{version}" + (f" (gen {generation})" if generation is not None else "")


def handle(args: argparse.Namespace) -> int:
    status = HubClient.from_args(args).get("/api/v1/status", {"taskset": args.taskset})
    rows = msgspec.convert(status["cells"], list[StatusRow])
    progress = [
        RolloutRow(taskset=taskset["name"], **taskset["rollout"])
        for taskset in status["tasksets"]
        if taskset["rollout"] is not None
    ]
    origins = {
        taskset["name"]: (taskset["version"], taskset["provenance"])
        for taskset in status["tasksets"]
        if taskset.get("provenance") and (args.taskset is None or taskset["name"] == args.taskset)
    }
    if args.output == "json":
        document = {
            "status": msgspec.to_builtins(rows),
            "rollouts": msgspec.to_builtins(progress),
        }
        if origins:
            document["provenance"] = {name: origin for name, (_, origin) in origins.items()}
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(
        f"{'TASKSET':<20}  {'CLUSTER':<20}  {'DESIRED':<14}  {'APPLIED':<14}  {'STATE':<11}  "
        f"{'DRIFT':>5}  DETAIL"
    )
    for row in rows:
        desired = (
            "removed" if row.removed else version_text(row.desired_version, row.desired_generation)
        )
        applied = version_text(row.applied_version, row.applied_generation)
        detail = row.error or (f"overrides: {', '.join(row.overrides)}" if row.overrides else "")
        print(
            f"{row.taskset:<20}  {row.cluster:<20}  {desired:<14}  {applied:<14}  "
            f"{row.state:<11}  {row.drift_count:>5}  {detail}"
        )
    for name, (version, origin) in sorted(origins.items()):
        print(f"source of {name} v{version}: {provenance_text(origin)}")
    for rollout in progress:
        failed = f"; failed: {', '.join(rollout.failed)}" if rollout.failed else ""
        print(
            f"rollout {rollout.taskset} v{rollout.version}: {rollout.state}, wave "
            f"{rollout.wave + 1}/{rollout.total_waves}, {rollout.applied}/{rollout.targets} "
            f"applied{failed}"
        )
    return 0
