"""`fleetbus notify`: subscribe webhooks to the fleet's events, list, remove, see delivery.

A subscription sends each event it wants to one URL as generic JSON, a CloudEvents 1.0 event
or a Slack-style message, signed with HMAC-SHA256 (`X-Fleetbus-Signature: sha256=<hex>` over
`<X-Fleetbus-Timestamp>.<body>`). Filters (all that are given must match): `--event TYPE`,
`--taskset N`, `--cluster C` (each repeatable) and `--min-severity info|warning|error`.

The URL is a secret (a Slack webhook's path is its credential): pass it in a file
(`--url-file F`, `-` for stdin) to keep it out of shell history, or with `--url`. The HMAC key
is generated and printed once unless `--hmac-key-file F` gives one. Lists and status show the
receiver's scheme, host and port only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fleetbus.client import HubClient, add_hub_options
from fleetbus.errors import ConflictingOptions
from fleetbus.output import Column, add_output_option, emit, when

SINKS = ("json", "cloudevents", "slack")
SEVERITIES = ("info", "warning", "error")
MAX_SECRET_FILE = 64 * 1024

SUBSCRIPTION_COLUMNS = [
    Column("NAME", lambda s: s["name"]),
    Column("SINK", lambda s: s["sink"]),
    Column("ENDPOINT", lambda s: s["endpoint"]),
    Column("EVENTS", lambda s: s["filters"].get("event_types")),
    Column("PROJECTS", lambda s: s["filters"].get("projects")),
    Column("TASKSETS", lambda s: s["filters"].get("tasksets")),
    Column("CLUSTERS", lambda s: s["filters"].get("clusters")),
    Column("MIN-SEVERITY", lambda s: s["filters"].get("min_severity", "info")),
    Column("CREATED", lambda s: when(s["created_at"]), wide=True),
    Column("BY", lambda s: s.get("created_by"), wide=True),
]
STATUS_COLUMNS = [
    Column("NAME", lambda s: s["name"]),
    Column("HEALTH", lambda s: s["health"]),
    Column("PENDING", lambda s: s["pending"]),
    Column("DELIVERED", lambda s: s["delivered"]),
    Column("FAILED", lambda s: s["failed_attempts"]),
    Column("LAST-ERROR", lambda s: s["last_error"]),
    Column("SINK", lambda s: s["sink"], wide=True),
    Column("ENDPOINT", lambda s: s["endpoint"], wide=True),
    Column("LAST-DELIVERED", lambda s: when(s["last_delivered_at"]), wide=True),
    Column("LAST-FAILURE", lambda s: when(s["last_error_at"]), wide=True),
    Column(
        "RETRY-IN",
        lambda s: f"{s['next_attempt_in_s']:.0f}s" if s["health"] != "ok" else "",
        wide=True,
    ),
]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "notify",
        help="send the fleet's events to webhooks (JSON, CloudEvents, Slack), HMAC-signed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="notify_command", required=True, metavar="ACTION")

    add = commands.add_parser(
        "add",
        help="subscribe a webhook (admin); prints the HMAC key once, as the last line",
        description="Subscribe a webhook to the events the filters select (all given must "
        "match; none given: every event).",
    )
    add.add_argument("name", metavar="NAME", help="the subscription's name (DNS label)")
    url = add.add_mutually_exclusive_group(required=True)
    url.add_argument("--url", help="the receiver's URL (a secret; prefer --url-file)")
    url.add_argument("--url-file", type=Path, metavar="F", help="read the URL from F ('-': stdin)")
    add.add_argument(
        "--format",
        dest="sink",
        choices=SINKS,
        default="json",
        help="json (generic), cloudevents (CloudEvents 1.0, structured mode) or slack "
        "(an incoming-webhook message); default json",
    )
    add.add_argument(
        "--event",
        dest="events",
        action="append",
        default=[],
        metavar="TYPE",
        help="only this event type (e.g. TaskFailed, RolloutHalted, DriftDetected); repeatable",
    )
    add.add_argument(
        "--in-project",
        dest="projects",
        action="append",
        default=[],
        metavar="P",
        help="only events about objects of project P (not hub-wide ones); repeatable",
    )
    add.add_argument(
        "--taskset",
        dest="tasksets",
        action="append",
        default=[],
        metavar="N",
        help="only events about this taskset; repeatable",
    )
    add.add_argument(
        "--cluster",
        dest="clusters",
        action="append",
        default=[],
        metavar="C",
        help="only events naming this cluster; repeatable",
    )
    add.add_argument(
        "--min-severity",
        choices=SEVERITIES,
        default="info",
        help="only events at least this severe: error (failures, halts, refusals), warning "
        "(drift, blocked holds, deregistrations, repairs), info (everything); default info",
    )
    add.add_argument(
        "--hmac-key-file",
        type=Path,
        metavar="F",
        help="sign with the key in F (at least 16 characters) instead of a generated one",
    )
    add_hub_options(add)
    add.set_defaults(handler=handle_add)

    listing = commands.add_parser("ls", help="list subscriptions (receivers by host only)")
    add_output_option(listing)
    add_hub_options(listing)
    listing.set_defaults(handler=handle_list)

    remove = commands.add_parser("rm", help="remove a subscription (admin)")
    remove.add_argument("name", metavar="NAME", help="the subscription to remove")
    add_hub_options(remove)
    remove.set_defaults(handler=handle_remove)

    status = commands.add_parser(
        "status",
        help="delivery per subscription: pending events, failures, the last error",
    )
    status.add_argument("name", nargs="?", default=None, metavar="NAME", help="only this one")
    add_output_option(status)
    add_hub_options(status)
    status.set_defaults(handler=handle_status)


def read_secret(path: Path, what: str) -> str:
    """The first line of a file (or stdin for '-'), stripped; refused when empty or huge."""
    try:
        text = sys.stdin.read(MAX_SECRET_FILE + 1) if str(path) == "-" else _read(path)
    except OSError as e:
        raise ConflictingOptions(f"cannot read the {what} from {path}: {e.strerror}") from None
    if len(text) > MAX_SECRET_FILE:
        raise ConflictingOptions(f"{path}: the {what} file is over {MAX_SECRET_FILE} bytes")
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise ConflictingOptions(f"{path}: the {what} file is empty")
    return value


def _read(path: Path) -> str:
    with path.open(encoding="utf-8") as f:
        return f.read(MAX_SECRET_FILE + 1)


def handle_add(args: argparse.Namespace) -> int:
    url = args.url if args.url is not None else read_secret(args.url_file, "URL")
    body: dict[str, Any] = {
        "name": args.name,
        "sink": args.sink,
        "url": url,
        "event_types": args.events,
        "projects": args.projects,
        "tasksets": args.tasksets,
        "clusters": args.clusters,
        "min_severity": args.min_severity,
    }
    if args.hmac_key_file is not None:
        body["hmac_key"] = read_secret(args.hmac_key_file, "HMAC key")
    created = HubClient.from_args(args).post("/api/v1/notifications", body)
    subscription = created["subscription"]
    print(
        f"subscribed {subscription['name']}: {subscription['sink']} to "
        f"{subscription['endpoint']}; its HMAC key is shown only once:"
    )
    print(created["hmac_key"])
    return 0


def handle_list(args: argparse.Namespace) -> int:
    subscriptions = HubClient.from_args(args).get("/api/v1/notifications")
    emit(subscriptions, args.output, columns=SUBSCRIPTION_COLUMNS)
    return 0


def handle_remove(args: argparse.Namespace) -> int:
    removed = HubClient.from_args(args).delete(f"/api/v1/notifications/{args.name}")
    print(f"removed notification subscription {removed['name']}")
    return 0


def handle_status(args: argparse.Namespace) -> int:
    entries = HubClient.from_args(args).get("/api/v1/notifications/status")
    if args.name is not None:
        entries = [e for e in entries if e["name"] == args.name]
        if not entries:
            print(
                f"fleetbus: error: no notification subscription named {args.name!r}",
                file=sys.stderr,
            )
            return 2
    emit(entries, args.output, columns=STATUS_COLUMNS)
    return 0
