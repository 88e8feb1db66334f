"""`fleetbus rollout resume TASKSET`: let a halted rollout go on (through the hub's API)."""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.client import HubClient, add_hub_options


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("rollout", help="act on a taskset's rollout")
    common = argparse.ArgumentParser(add_help=False)
    add_hub_options(common)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    resume = verbs.add_parser("resume", parents=[common], help="resume a halted rollout")
    resume.add_argument("taskset", help="the taskset whose halted rollout to continue")
    resume.set_defaults(handler=handle_resume)


def handle_resume(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    resumed = client.post(f"/api/v1/tasksets/{args.taskset}/rollout/resume")
    print(f"rollout of {resumed['taskset']} v{resumed['version']} resumed")
    return 0
