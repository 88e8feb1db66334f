"""`fleetbus events`: replay the log for audit, or follow it live.

Reads the hub's API: replay pages through `/api/v1/events` by sequence, `--follow` reads the
live stream (Server-Sent Events) and resumes by itself after a dropped connection. Secrets never
reach the terminal: the hub leaves them out of what it sends. Events the hub has archived are
read like the others (the hub reads its archive where the live log starts later).

`fleetbus events verify` checks the audit trail end to end (`/api/v1/events/verify`): every
archive segment's hash and its link to the one before, and the live log's link to the newest;
it exits 1 and names the first broken segment and sequence when the trail does not verify.
"""

from __future__ import annotations

import argparse
import heapq
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from fleetbus.client import HubClient, Params, add_hub_options
from fleetbus.errors import HubRequestFailed
from fleetbus.options import timestamp, whole_number
from fleetbus.output import add_output_option, write_document
from taskset.selectors import parse_selector

STREAMS = ("events", "reports", "all")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("events", help="print the event log (audit replay)")
    parser.add_argument(
        "action",
        nargs="?",
        choices=("verify",),
        default=None,
        help="verify: check the hash chain of the archive and its link to the live log",
    )
    parser.add_argument(
        "--from-seq",
        type=whole_number(1),
        default=None,
        metavar="N",
        help="start at this sequence of the stream (default: its first)",
    )
    parser.add_argument(
        "--since",
        type=timestamp,
        default=None,
        metavar="T",
        help="only events stored at or after T (RFC 3339, e.g. 2026-11-24T10:00:00Z)",
    )
    parser.add_argument(
        "--until",
        type=timestamp,
        default=None,
        metavar="T",
        help="only events stored before T (RFC 3339)",
    )
    parser.add_argument("--cluster", default=None, metavar="C", help="only events about C")
    parser.add_argument(
        "-l",
        "--selector",
        default=None,
        metavar="SELECTOR",
        help="only events about clusters whose labels match (env=prod,tier!=edge), as their "
        "labels are when the command starts",
    )
    parser.add_argument("--taskset", default=None, metavar="N", help="only events about N")
    parser.add_argument(
        "--stream",
        choices=STREAMS,
        default=None,
        help="hub events, cluster reports, or all of them in time order (default: all with "
        "--cluster or --selector, whose story includes their reports; hub events otherwise)",
    )
    parser.add_argument(
        "-f",
        "-w",
        "--follow",
        "--watch",
        dest="follow",
        action="store_true",
        help="keep printing new events as they happen (--until is ignored; Ctrl-C stops)",
    )
    add_output_option(parser)
    add_hub_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.action == "verify":
        return verify(args)
    if args.stream is None:
        clusters = args.cluster or args.selector
        args.stream = "all" if clusters and args.from_seq is None else "events"
    if args.selector is not None:
        parse_selector(args.selector)  # a bad selector is refused before the hub is asked
    client = HubClient.from_args(args)
    filters: Params = {
        "cluster": args.cluster,
        "taskset": args.taskset,
        "selector": args.selector,
    }
    records = follow(client, args, filters) if args.follow else replay(client, args, filters)
    if args.output in ("json", "yaml") and not args.follow:
        write_document(list(records), args.output)
        return 0
    wide = args.output == "wide"
    if args.output in ("table", "wide"):
        header = f"{'SEQ':>7}  {'TIME':<24}  {'TYPE':<22}  {'ACTOR':<18}  "
        print(
            header + ("STREAM   CORRELATION                           " if wide else "") + "DETAIL"
        )
    for record in records:
        if args.output == "json":
            sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
        elif args.output == "yaml":
            print("---")
            write_document(record, "yaml")
        else:
            print(table_row(record, tagged=args.stream == "all", wide=wide))
        sys.stdout.flush()
    return 0


def verify(args: argparse.Namespace) -> int:
    """Print the verification of the audit trail; 1 when it is broken."""
    report = HubClient.from_args(args).get("/api/v1/events/verify")
    if args.output in ("json", "yaml"):
        write_document(report, args.output)
    else:
        print(verification_text(report))
    return 0 if report["ok"] else 1


def verification_text(report: dict[str, Any]) -> str:
    live = (
        f"live log {report['liveFrom']}..{report['liveTo']}"
        if report["liveFrom"]
        else "live log empty"
    )
    archived = (
        f"{report['segments']} archive segment(s), events 1..{report['archivedTo']} "
        f"({report['archivedEvents']} events), chain ends at {report['tailHash']}"
        if report["segments"]
        else "no archive segments"
    )
    broken = report.get("broken")
    if not broken:
        return f"verified: {archived}; {live}"
    where = f"segment {broken['segment']}" if broken["segment"] else "the live log"
    return (
        f"BROKEN at {where}, sequence {broken['sequence']}: {broken['reason']}\n"
        f"read until then: {archived}; {live}"
    )


def replay(
    client: HubClient,
    args: argparse.Namespace,
    filters: Params,
    ends: dict[str, int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every matching record; `ends` receives the last sequence of each stream read."""
    ends = {} if ends is None else ends
    common: dict[str, Any] = {
        **filters,
        "since": args.since.isoformat() if args.since else None,
        "until": args.until.isoformat() if args.until else None,
    }
    if args.stream != "all":
        return pages(client, {**common, "stream": args.stream, "from_seq": args.from_seq}, ends)
    return heapq.merge(
        pages(client, {**common, "stream": "events", "from_seq": args.from_seq}, ends),
        pages(client, {**common, "stream": "reports"}, ends),
        key=lambda record: str(record["stored_at"]),
    )


def pages(
    client: HubClient, params: dict[str, Any], ends: dict[str, int]
) -> Iterator[dict[str, Any]]:
    """Every matching record, one page after the other, following `next_from_seq`."""
    while True:
        page = client.get("/api/v1/events", {**params, "limit": 500})
        yield from page["events"]
        if page["next_from_seq"] is None:
            ends[str(page["stream"])] = int(page["last_seq"])
            return
        params = {**params, "from_seq": page["next_from_seq"]}


def follow(
    client: HubClient, args: argparse.Namespace, filters: Params
) -> Iterator[dict[str, Any]]:
    params: Params = {**filters, "streams": args.stream, "from_seq": args.from_seq}
    if args.since is not None:
        # Catch up from the requested time first, then go on live from where that ended.
        ends: dict[str, int] = {}
        window = argparse.Namespace(**{**vars(args), "until": None})
        yield from replay(client, window, filters, ends)
        params = {
            **filters,
            "streams": args.stream,
            "from_seq": ends["events"] + 1 if "events" in ends else None,
            "reports_from_seq": ends["reports"] + 1 if "reports" in ends else None,
        }
    for message in client.stream("/api/v1/events/stream", params):
        if message.event == "stream-error":
            raise_stream_error(message.json())
        if message.event == "message":
            yield message.json()


def raise_stream_error(body: dict[str, Any]) -> None:
    raise HubRequestFailed(503, str(body.get("error", "the live stream failed")))


def table_row(record: dict[str, Any], *, tagged: bool = False, wide: bool = False) -> str:
    stored = str(record["stored_at"]).replace("+00:00", "Z")
    time = stored[:23] + "Z" if len(stored) > 23 else stored
    seq = str(record["seq"])
    if tagged:
        seq = ("r" if record["stream"] == "reports" else "e") + seq
    actor = str(record["event"].get("actor", ""))[:18]
    extra = ""
    if wide:
        correlation = str(record["event"].get("correlation_id") or "-")
        extra = f"{record['stream']:<7}  {correlation:<36}  "
    return f"{seq:>7}  {time:<24}  {record['type']:<22}  {actor:<18}  {extra}{record['summary']}"
