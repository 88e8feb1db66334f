"""`fleetbus events`: replay the log for audit, or follow it live."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson

from events.catalog import (
    ClusterTaskScheduled,
    Event,
    OverrideSet,
    Report,
    TasksetPublished,
)
from events.store import StoredEvent
from fleetbus.datadir import DEFAULT_DATA_DIR
from fleetbus.local import open_local_store
from fleetbus.options import timestamp


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("events", help="print the event log (audit replay)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--from-seq", type=int, default=None, metavar="N")
    parser.add_argument("--since", type=timestamp, default=None, metavar="T")
    parser.add_argument("--until", type=timestamp, default=None, metavar="T")
    parser.add_argument("--follow", action="store_true", help="keep printing new events")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        if args.follow:
            stream = store.follow(from_seq=args.from_seq, since=args.since, skip_undecodable=True)
        else:
            stream = store.read(
                from_seq=args.from_seq, since=args.since, until=args.until, skip_undecodable=True
            )
        if args.output == "json" and not args.follow:
            rows = [event_record(stored) async for stored in stream]
            sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
            return 0
        if args.output == "table":
            print(f"{'SEQ':>6}  {'TIME':<24}  {'TYPE':<22}  {'ACTOR':<18}  DETAIL")
        async for stored in stream:
            if args.output == "json":
                sys.stdout.buffer.write(orjson.dumps(event_record(stored)) + b"\n")
            else:
                print(table_row(stored))
            sys.stdout.flush()
        return 0
    finally:
        await store.close()


def event_record(stored: StoredEvent) -> dict[str, Any]:
    """A JSON-ready record of a stored event, with snapshot bodies left out."""
    body: dict[str, Any] = msgspec.to_builtins(stored.event)
    if isinstance(stored.event, TasksetPublished):
        body["body"] = f"<{stored.event.body_size} bytes, digest {stored.event.digest}>"
    return {
        "seq": stored.seq,
        "subject": stored.subject,
        "stored_at": stored.stored_at.isoformat(),
        "event": body,
    }


def table_row(stored: StoredEvent) -> str:
    event = stored.event
    time = stored.stored_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:23] + "Z"
    return (
        f"{stored.seq:>6}  {time:<24}  {event.type_name:<22}  {event.actor[:18]:<18}  "
        f"{describe(event)}"
    )


def describe(event: Event) -> str:
    """One line saying what an event means, for people reading the log."""
    match event:
        case TasksetPublished():
            return f"{event.taskset} v{event.taskset_version} ({event.format}, {event.digest[:19]})"
        case OverrideSet():
            scope = f"cluster {event.cluster}" if event.cluster else f"selector {event.selector}"
            return f"{event.taskset}/{event.name} on {scope}"
        case ClusterTaskScheduled():
            what = "removal" if event.removed else f"v{event.taskset_version}"
            return f"{event.taskset} {what} -> {event.cluster} (gen {event.generation})"
        case Report():
            return f"{event.cluster}: {event.taskset} v{event.taskset_version}"
    fields = {
        name: getattr(event, name)
        for name in event.__struct_fields__
        if name not in ("id", "occurred_at", "actor", "correlation_id", "causation_id", "version")
    }
    return " ".join(f"{k}={v}" for k, v in fields.items())
