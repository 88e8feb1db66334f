"""`fleetbus cluster`: register, list, relabel and deregister clusters, through the hub's API.

`register` asks the hub (`POST /api/v1/clusters`, admin) to record the cluster and issue its
client certificate; the answer, sent once the hub admits the cluster, is the cluster's edge
bundle as a .tar.gz. The key in it exists nowhere else, so `--out DIR` unpacks it
(`fleetbus.bundle_unpack`: checked member by member, key 0600) and without `--out` it is
dropped: that cluster's edge cannot connect until it is removed and registered again with one.
`--out` must name a new or empty directory, or one holding an earlier bundle of the same
cluster (which is then renewed in place); anything else is refused before the hub is asked.

`rm` answers once the hub has revoked the cluster's access. By default what runs on the cluster
stays there (fleetbus only stops managing it); `rm --drain` first has every taskset removed
from the cluster (preDelete first), shows what is left until the cluster reports it empty, and
only then deregisters it. `ls` and `show` (one cluster, with its connector's and controller's
health) read the hub's read models,
after waiting (briefly) until they include everything on the log, so it lists what a command
just before it did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api.errors import InvalidRequest
from edge_connector.errors import BundleError
from events.streams import EVENTS_STREAM
from fleetbus.bundle_unpack import BundleTarget, prepare_bundle_dir, unpack_bundle
from fleetbus.client import HubClient, add_hub_options
from fleetbus.output import Column, add_output_option, emit, table_text, when, write_document
from registry.clusters import parse_label_arguments
from taskset.selectors import parse_selector

BUNDLE_MEDIA_TYPE = "application/gzip"
READ_MODELS_WAIT_S = 10.0
LAST_SEQUENCE = 2**53
"""A sequence past any log's end: an events page from there is empty but says where it ends."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cluster", help="register, list, label and remove clusters")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("register", help="register a cluster")
    add.add_argument("name", help="the cluster's name (DNS label)")
    add.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label selectors match (repeatable)",
    )
    add.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the cluster's bundle into DIR (new, empty, or an earlier bundle of NAME)",
    )
    add_hub_options(add)
    add.set_defaults(handler=handle_register)

    ls = verbs.add_parser("ls", help="list registered clusters")
    add_output_option(ls)
    ls.add_argument("--all", action="store_true", help="include deregistered clusters")
    ls.add_argument(
        "-l",
        "--selector",
        default="",
        metavar="SELECTOR",
        help="only clusters whose labels match (env=prod,tier!=edge,region in (eu,us),gpu)",
    )
    add_hub_options(ls)
    ls.set_defaults(handler=handle_ls)

    show = verbs.add_parser(
        "show",
        help="one cluster: connection, edge and controller health, tasksets, recent drift",
        description="One cluster as the hub sees it: labels, whether it is connected, the "
        "connector's version and readiness, the cluster controller's health (ready and why, "
        "version, the replica that reconciles, watch sync, last error, every replica), each "
        "taskset's desired and applied version, and the latest drift.",
    )
    show.add_argument("name", help="the cluster's name")
    add_output_option(show)
    add_hub_options(show)
    show.set_defaults(handler=handle_show)

    label = verbs.add_parser("label", help="set (KEY=VALUE) or remove (KEY-) labels")
    label.add_argument("name", help="the cluster to relabel")
    label.add_argument(
        "labels",
        nargs="+",
        metavar="KEY=VALUE|KEY-",
        help="set a label (KEY=VALUE) or remove it (KEY-)",
    )
    add_hub_options(label)
    label.set_defaults(handler=handle_label)

    rm = verbs.add_parser(
        "rm",
        help="deregister a cluster and revoke its access; by default what runs there stays, "
        "--drain removes every taskset first",
    )
    rm.add_argument("name", help="the cluster to deregister")
    rm.add_argument(
        "--drain",
        action="store_true",
        help="remove every taskset from the cluster (preDelete first) and wait until the "
        "cluster reports them gone, then deregister it",
    )
    rm.add_argument(
        "--drain-timeout",
        type=positive_seconds,
        default=900.0,
        metavar="S",
        help="give up draining after S seconds (default 900); the cluster stays registered",
    )
    add_hub_options(rm)
    rm.set_defaults(handler=handle_rm)


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def cluster_path(name: str, *rest: str) -> str:
    return "/".join(["/api/v1/clusters", urllib.parse.quote(name, safe=""), *rest])


DRAIN_POLL_S = 1.0


def positive_seconds(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected seconds, like 600 or 2.5, got {text!r}") from e
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def drain(client: HubClient, name: str, timeout_s: float) -> bool:
    """Ask the hub to remove every taskset from the cluster; wait until none is left there,
    printing each change. False (and a message) when the time is up."""
    client.post(cluster_path(name, "drain"))
    print(f"draining cluster {name}: every taskset leaves it, running preDelete first")
    deadline = time.monotonic() + timeout_s
    shown = ""
    while True:
        cells = client.get(cluster_path(name))["cells"]
        left = sorted(f"{cell['taskset']} ({cell['state']})" for cell in cells)
        text = ", ".join(left)
        if text != shown:
            print(f"  {len(left)} left: {text}" if left else f"  cluster {name} is empty")
            shown = text
        if not left:
            return True
        if time.monotonic() > deadline:
            print(
                f"fleetbus: cluster {name} still runs {text} after {timeout_s:.0f}s; it stays "
                "registered (draining): run the command again to keep waiting",
                file=sys.stderr,
            )
            return False
        time.sleep(DRAIN_POLL_S)


def handle_register(args: argparse.Namespace) -> int:
    labels, removed = parse_label_arguments(args.label)
    if removed:
        raise InvalidRequest("--label takes KEY=VALUE")
    client = HubClient.from_args(args)
    target: BundleTarget | None = None
    if args.out is not None:
        target = prepare_bundle_dir(args.out, args.name)
    written = False
    try:
        archive = client.request(
            "POST",
            "/api/v1/clusters",
            body=json.dumps({"name": args.name, "labels": labels}).encode(),
            content_type="application/json",
            headers={"Accept": BUNDLE_MEDIA_TYPE},
        )
        print(f"cluster {args.name} registered ({labels_text(labels)})")
        if target is None:
            print(
                "no bundle written (--out DIR): its edge cannot connect until it has one "
                f"(`fleetbus cluster rm {args.name}`, then register it again with --out DIR)"
            )
            return 0
        try:
            bundle = unpack_bundle(archive, target)
        except BundleError as e:
            raise BundleError(
                f"{e}; cluster {args.name} is registered without a usable bundle: "
                f"`fleetbus cluster rm {args.name}`, then register it again"
            ) from e
        written = True
    finally:
        if target is not None and not written:
            target.discard()
    print(f"bundle written to {bundle.root}")
    return 0


def wait_for_read_models(client: HubClient, timeout_s: float = READ_MODELS_WAIT_S) -> None:
    """Wait until the hub's read models include every event logged before this call.

    The read models trail the log by the projector's delay (milliseconds, when it runs), so
    without this a `cluster ls` right after `cluster register` could miss the new cluster.
    After `timeout_s` (a stopped projector) the list is shown anyway, with a note.
    """
    end = int(client.get("/api/v1/events", {"from_seq": LAST_SEQUENCE, "limit": 1})["last_seq"])
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        position = int(client.get("/api/v1/status")["positions"].get(EVENTS_STREAM, 0))
        if position >= end:
            return
        if time.monotonic() >= deadline:
            print(
                f"fleetbus: note: the hub's read models are {end - position} event(s) behind "
                "its log; this list may be out of date",
                file=sys.stderr,
            )
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def registered_at_text(value: str | None) -> str:
    if not value:
        return "-"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def handle_ls(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    wait_for_read_models(client)
    clusters: list[dict[str, Any]] = client.get("/api/v1/clusters", {"all": args.all})
    if args.selector:
        wanted = parse_selector(args.selector)
        clusters = [c for c in clusters if wanted.matches(c["labels"])]
    emit(clusters, args.output, columns=CLUSTER_COLUMNS)
    return 0


CLUSTER_COLUMNS = [
    Column("NAME", lambda c: c["name"]),
    Column("STATE", lambda c: "registered" if c.get("registered", True) else "deregistered"),
    Column("REGISTERED", lambda c: registered_at_text(c.get("registered_at"))),
    Column("LABELS", lambda c: labels_text(c["labels"])),
    Column("LABEL-COUNT", lambda c: len(c["labels"]), wide=True),
    Column("CONNECTED", lambda c: "yes" if c.get("connected") else "no", wide=True),
    Column("EDGE-VERSION", lambda c: c.get("edge_version") or "-", wide=True),
    Column("EDGE-READY", lambda c: edge_ready_text(c.get("edge_ready")), wide=True),
    Column("CONTROLLER", lambda c: controller_text(c.get("controller")), wide=True),
    Column("CONTROLLER-VERSION", lambda c: (c.get("controller") or {}).get("version"), wide=True),
]


def controller_text(controller: dict[str, Any] | None) -> str:
    """`ready` or `not ready` (`cluster show` says why); `-` when not known."""
    if not controller:
        return "-"
    if controller.get("ready"):
        return "ready"
    return "not ready"


def handle_show(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    wait_for_read_models(client)
    detail: dict[str, Any] = client.get(cluster_path(args.name))
    if args.output in ("json", "yaml"):
        write_document(detail, args.output)
        return 0
    sys.stdout.write(cluster_detail_text(detail, wide=args.output == "wide"))
    return 0


def cluster_detail_text(detail: dict[str, Any], *, wide: bool = False) -> str:
    c = detail["cluster"]
    lines = [
        f"cluster {c['name']}  ({'registered' if c.get('registered', True) else 'deregistered'}"
        f" {registered_at_text(c.get('registered_at'))})",
        f"  labels:      {labels_text(c['labels'])}",
        f"  connected:   {'yes' if c.get('connected') else 'no'}"
        f" (last heard {when(c.get('last_seen'))})",
    ]
    if c.get("edge_version") or c.get("edge_ready") is not None:
        lines.append(
            f"  edge:        {c.get('edge_version') or '?'}, "
            f"{edge_ready_text(c.get('edge_ready'))}: {c.get('edge_health') or '-'}"
        )
    else:
        lines.append("  edge:        not reported")
    lines += controller_lines(c.get("controller"), wide=wide)
    lines.append("tasksets:")
    cells = detail.get("cells") or []
    if cells:
        lines += ["  " + line for line in table_text(cells, CELL_COLUMNS, wide=wide).splitlines()]
    else:
        lines.append("  none")
    drift = detail.get("drift") or []
    if drift:
        lines.append("recent drift:")
        for row in drift[:5]:
            lines.append(f"  {when(row.get('time'))}  {row.get('type')}  {row.get('summary')}")
    return "\n".join(lines) + "\n"


def controller_lines(controller: dict[str, Any] | None, *, wide: bool) -> list[str]:
    if not controller:
        return ["  controller:  not reported (a simulated cluster, or no inventory digest yet)"]
    lines = [
        f"  controller:  {controller.get('version') or '?'}, "
        f"{'ready' if controller.get('ready') else 'NOT READY'}: {controller.get('reason')}"
    ]
    if controller.get("leader"):
        synced = controller.get("watches_synced")
        watches = "-" if synced is None else ("synced" if synced else "not synced")
        lines.append(f"    leader {controller['leader']}, watches {watches}")
    if controller.get("last_error"):
        lines.append(
            f"    last error at {when(controller.get('last_error_at'))}: {controller['last_error']}"
        )
    for replica in controller.get("replicas") or []:
        state = (
            "stale" if replica.get("stale") else ("ready" if replica.get("ready") else "not ready")
        )
        line = (
            f"    replica {replica['name']}: {replica.get('role') or '?'}, {state}, "
            f"heard {when(replica.get('heard_at'))}"
        )
        if wide:
            watches = ",".join(
                f"{name}={'synced' if ok else 'pending'}"
                for name, ok in sorted((replica.get("watches") or {}).items())
            )
            line += f", {replica.get('version') or '?'}, {replica.get('reason') or '-'}"
            line += f", watches {watches or '-'}"
        lines.append(line)
    return lines


CELL_COLUMNS = [
    Column("TASKSET", lambda r: r["taskset"]),
    Column("DESIRED", lambda r: r.get("desired_version")),
    Column("APPLIED", lambda r: r.get("applied_version")),
    Column("STATE", lambda r: r.get("state")),
    Column("DRIFT", lambda r: r.get("drift_count"), wide=True),
    Column("ERROR", lambda r: r.get("error"), wide=True),
]


def edge_ready_text(ready: object) -> str:
    if ready is None:
        return "-"
    return "ready" if ready else "not ready"


def handle_label(args: argparse.Namespace) -> int:
    labels, removed = parse_label_arguments(args.labels)
    client = HubClient.from_args(args)
    body = json.dumps({"set": labels, "remove": removed}).encode()
    answer = json.loads(
        client.request(
            "PATCH", cluster_path(args.name, "labels"), body=body, content_type="application/json"
        )
    )
    print(f"cluster {answer['name']} labels: {labels_text(answer['labels'])}")
    return 0


def handle_rm(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    if args.drain and not drain(client, args.name, args.drain_timeout):
        return 1
    answer = client.delete(cluster_path(args.name))
    print(f"cluster {answer['name']} deregistered; its access to the hub is revoked")
    return 0
