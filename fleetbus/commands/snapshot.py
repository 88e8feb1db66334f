"""`fleetbus snapshot take|ls`: snapshots of the scheduler's fold, which restarts and
`state --at` start from instead of replaying the whole log.

The scheduler leader takes one every `--snapshot-every` events by itself; `take` takes one
now (through the hub: `POST /api/v1/snapshots`, admin), `ls` lists them
(`GET /api/v1/snapshots`).
"""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.client import HubClient, add_hub_options
from fleetbus.output import add_output_option, write_document


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "snapshot", help="take and list snapshots of the scheduler's fold of the log"
    )
    commands = parser.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    take = commands.add_parser("take", help="take a snapshot of the log now (admin)")
    add_output_option(take)
    add_hub_options(take)
    take.set_defaults(handler=handle_take)
    listing = commands.add_parser("ls", help="list snapshots, newest first")
    add_output_option(listing)
    add_hub_options(listing)
    listing.set_defaults(handler=handle_list)


HEADER = (
    f"{'ID':<21}  {'EVENTS':>10}  {'EVENTS TIME':<19}  {'REPORTS':>10}  {'CLUSTERS':>8}  "
    f"{'BYTES':>12}  SCHEMA"
)


def _row(snapshot: dict[str, Any]) -> str:
    when = str(snapshot["eventsTime"])[:19].replace("T", " ")
    return (
        f"{snapshot['id']:<21}  {snapshot['eventsSequence']:>10}  {when:<19}  "
        f"{snapshot['reportsSequence']:>10}  {snapshot['clusters']:>8}  "
        f"{snapshot['bytes']:>12,}  {snapshot['schema']}"
    )


def handle_take(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    snapshot = client.post("/api/v1/snapshots")["snapshot"]
    if args.output in ("json", "yaml"):
        write_document(snapshot, args.output)
    elif snapshot is None:
        print("the log is empty: nothing to snapshot")
    else:
        print(HEADER)
        print(_row(snapshot))
    return 0


def handle_list(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    snapshots = client.get("/api/v1/snapshots")["snapshots"]
    if args.output in ("json", "yaml"):
        write_document(snapshots, args.output)
        return 0
    print(HEADER)
    for snapshot in snapshots:
        print(_row(snapshot))
    return 0
