"""`fleetbus rollout resume TASKSET`: let a halted rollout go on."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api.rollouts import resume_rollout
from fleetbus.commands.publish import local_actor
from fleetbus.datadir import DEFAULT_DATA_DIR
from fleetbus.local import open_local_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("rollout", help="act on a taskset's rollout")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    resume = verbs.add_parser("resume", parents=[common], help="resume a halted rollout")
    resume.add_argument("taskset")
    resume.set_defaults(handler=handle_resume)


async def handle_resume(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        event = await resume_rollout(
            store, args.taskset, actor=local_actor(), now=datetime.now(UTC)
        )
    finally:
        await store.close()
    print(f"rollout of {event.taskset} v{event.taskset_version} resumed")
    return 0
