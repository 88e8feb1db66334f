"""`fleetbus state --cluster C [--at T]`: the desired state of a cluster, now or at any past time.

Computed from the log, not from DESIRED: EVENTS up to T are replayed through the scheduler's
own fold and override functions, so the answer is right for any moment. Secret values are
masked. The hub computes it (`GET /api/v1/clusters/C/state?at=T`, which calls
`state_document` below); this command asks it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import yaml

from fleetbus.client import HubClient, add_hub_options
from fleetbus.options import timestamp
from scheduler.history import DesiredStateAt
from taskset.names import check_name
from taskset.secrets import mask_secrets


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("state", help="the desired state of a cluster, as of a time")
    parser.add_argument(
        "--cluster", required=True, metavar="C", help="the cluster whose desired state to show"
    )
    parser.add_argument(
        "--at", type=timestamp, default=None, metavar="T", help="as of this time (default: now)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        default="yaml",
        help="output format: yaml, json (default yaml)",
    )
    add_hub_options(parser)
    parser.set_defaults(handler=handle)


def state_document(state: DesiredStateAt, at: datetime | None) -> dict[str, Any]:
    tasks = []
    for entry in state.tasks:
        task = entry.task
        if task.taskset is not None:
            task = msgspec.structs.replace(task, taskset=mask_secrets(task.taskset))
        tasks.append(
            {
                "scheduledAt": entry.scheduled_at.isoformat(),
                "sequence": entry.seq,
                "verified": entry.verified,
                **({"problem": entry.problem} if entry.problem else {}),
                **(
                    {"provenance": msgspec.to_builtins(entry.provenance)}
                    if entry.provenance is not None
                    else {}
                ),
                "clusterTask": msgspec.to_builtins(task),
            }
        )
    return {
        "cluster": state.cluster,
        "asOf": (at or datetime.now(UTC)).isoformat(),
        "registered": state.registered,
        "labels": state.labels,
        "logSequence": state.last_seq,
        "blueprints": [
            {
                "blueprint": entry.blueprint,
                "version": entry.version,
                "publishedBy": entry.published_by,
                "publishedAt": entry.published_at.isoformat(),
                "pinned": entry.pinned,
            }
            for entry in state.blueprints
        ],
        "tasks": tasks,
    }


def handle(args: argparse.Namespace) -> int:
    check_name("cluster", args.cluster)
    client = HubClient.from_args(args)
    at = args.at.isoformat() if args.at else None
    document = client.get(f"/api/v1/clusters/{args.cluster}/state", {"at": at})
    if args.output == "json":
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    return 0
