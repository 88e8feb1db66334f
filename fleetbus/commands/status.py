"""`fleetbus status [TASKSET]`: per cluster, what it should run, what it runs, and how it is.

Reads the hub's projection (`projector.db` in the data dir) read-only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson

from fleetbus.datadir import DEFAULT_DATA_DIR
from projector.db import ProjectionDb
from projector.queries import fleet_status, rollouts
from projector.service import PROJECTION_FILE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="desired and applied state per cluster")
    parser.add_argument("taskset", nargs="?", default=None)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(handler=handle)


def version_text(version: int | None, generation: int | None) -> str:
    if version is None:
        return "-"
    return f"v{version}" + (f" (gen {generation})" if generation is not None else "")


async def handle(args: argparse.Namespace) -> int:
    db = await ProjectionDb.open_readonly(args.data_dir / PROJECTION_FILE)
    try:
        rows = await fleet_status(db, args.taskset)
        progress = await rollouts(db, args.taskset)
    finally:
        await db.close()
    if args.output == "json":
        document = {
            "status": msgspec.to_builtins(rows),
            "rollouts": msgspec.to_builtins(progress),
        }
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
    for rollout in progress:
        failed = f"; failed: {', '.join(rollout.failed)}" if rollout.failed else ""
        print(
            f"rollout {rollout.taskset} v{rollout.version}: {rollout.state}, wave "
            f"{rollout.wave + 1}/{rollout.total_waves}, {rollout.applied}/{rollout.targets} "
            f"applied{failed}"
        )
    return 0
