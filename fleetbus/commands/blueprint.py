"""`fleetbus blueprint`: publish a fleet's standard stack, see it, compare versions, assign or
pin clusters, force a sync, and find the clusters that are behind.

A blueprint file is YAML (see `taskset.blueprints.parse_blueprint`): a name, entries (each a
taskset, optionally pinned to a version, with Helm values and `dependsOn`), or a base and the
entries it adds, replaces or removes, a selector and a drift policy. Every verb goes through
the hub's API (`/api/v1/blueprints`); entry values come back with secrets masked.
"""

from __future__ import annotations

import argparse
import urllib.parse
from pathlib import Path
from typing import Any

import orjson

from api.errors import InvalidRequest
from fleetbus.client import HubClient, add_hub_options
from fleetbus.commands.override import json_body, read_yaml_file
from fleetbus.output import Column, add_output_option, emit, when, write_document


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "blueprint", help="versioned stacks of tasksets applied to every matching cluster"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    publish = verbs.add_parser("publish", help="publish the next version of a blueprint")
    publish.add_argument("file", type=Path, help="the blueprint (YAML)")
    publish.add_argument("--batch-size", type=int, default=0, help="clusters per wave")
    add_hub_options(publish)
    publish.set_defaults(handler=handle_publish)

    ls = verbs.add_parser("ls", help="every blueprint at its latest version")
    add_output_option(ls)
    add_hub_options(ls)
    ls.set_defaults(handler=handle_ls)

    show = verbs.add_parser("show", help="one version of a blueprint and its clusters' status")
    show.add_argument("name", help="the blueprint")
    show.add_argument("--version", type=int, default=0, help="default: the latest")
    show.add_argument(
        "--behind",
        type=int,
        default=None,
        metavar="N",
        help="list only clusters not in sync on version N",
    )
    add_output_option(show)
    add_hub_options(show)
    show.set_defaults(handler=handle_show)

    diff = verbs.add_parser("diff", help="what changes between two versions")
    diff.add_argument("name", help="the blueprint")
    diff.add_argument(
        "--from",
        dest="from_version",
        type=int,
        default=0,
        metavar="A",
        help="the older version (default: the one before --to)",
    )
    diff.add_argument(
        "--to",
        dest="to_version",
        type=int,
        default=0,
        metavar="B",
        help="the newer version (default: the latest)",
    )
    add_output_option(diff, formats=("text", "json", "yaml"), default="text")
    add_hub_options(diff)
    diff.set_defaults(handler=handle_diff)

    assign = verbs.add_parser("assign", help="assign (and pin) a cluster, or force its sync")
    assign.add_argument("name", help="the blueprint")
    assign.add_argument("--cluster", required=True, help="the cluster to assign")
    what = assign.add_mutually_exclusive_group()
    what.add_argument("--version", type=int, default=0, help="pin the cluster to this version")
    what.add_argument("--remove", action="store_true", help="end the assignment and pin")
    what.add_argument(
        "--sync", action="store_true", help="force-sync: send every entry to the cluster again"
    )
    add_hub_options(assign)
    assign.set_defaults(handler=handle_assign)


def blueprint_path(*parts: str) -> str:
    return "/".join(["/api/v1/blueprints", *(urllib.parse.quote(p, safe="") for p in parts)])


def handle_publish(args: argparse.Namespace) -> int:
    document = read_yaml_file(args.file, "blueprint")
    if not isinstance(document, dict):
        raise InvalidRequest(f"{args.file}: a blueprint is a YAML mapping with name and entries")
    if args.batch_size < 0:
        raise InvalidRequest(f"--batch-size must not be negative, got {args.batch_size}")
    body = json_body({"blueprint": document, "rollout": {"batch_size": args.batch_size}}, args.file)
    answer = orjson.loads(
        HubClient.from_args(args).request(
            "POST", blueprint_path(), body=body, content_type="application/json"
        )
    )
    what = "published" if answer["changed"] else "unchanged"
    print(f"blueprint {answer['name']} v{answer['version']} {what}")
    return 0


def handle_ls(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = HubClient.from_args(args).get(blueprint_path())
    emit(rows, args.output, columns=BLUEPRINT_COLUMNS)
    return 0


BLUEPRINT_COLUMNS = [
    Column("NAME", lambda b: b["name"]),
    Column("VERSION", lambda b: b["version"]),
    Column("SELECTOR", lambda b: b["selector"]),
    Column("ENTRIES", lambda b: ", ".join(e["taskset"] for e in b["entries"])),
    Column(
        "BASE", lambda b: f"{b['base']} v{b['base_version']}" if b.get("base") else "", wide=True
    ),
    Column("DRIFT", lambda b: b.get("drift_policy") or "per taskset", wide=True),
    Column("PUBLISHED", lambda b: when(b.get("published_at")), wide=True),
    Column("BY", lambda b: b.get("published_by"), wide=True),
]


def handle_show(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    view = client.get(blueprint_path(args.name), {"version": str(args.version)})
    params = {} if args.behind is None else {"behind": str(args.behind)}
    clusters = client.get(blueprint_path(args.name, "status"), params)
    if args.output in ("json", "yaml"):
        write_document({"blueprint": view, "clusters": clusters}, args.output)
        return 0
    base = f", extends {view['base']} v{view['base_version']}" if view["base"] else ""
    print(
        f"blueprint {view['name']} v{view['version']} (latest v{view['latest']}{base}), "
        f"selector {view['selector'] or '-'}, drift {view['drift_policy'] or 'per taskset'}, "
        f"published by {view['published_by']} at {view['published_at']}"
    )
    for entry in view["entries"]:
        version = f"v{entry['version']}" if entry["version"] else "latest"
        needs = f"  dependsOn {', '.join(entry['depends_on'])}" if entry["depends_on"] else ""
        print(f"  {entry['taskset']:<24} {version:<8}{needs}")
    title = "clusters" if args.behind is None else f"clusters not in sync on v{args.behind}"
    print(f"{title}:")
    print(f"  {'CLUSTER':<24}  {'VERSION':>7}  {'STATE':<12}  DETAIL")
    for row in clusters:
        detail = f"{row['entry']}: {row['reason']}" if row["entry"] else row["reason"]
        pin = "*" if row["pinned"] else ""
        line = f"  {row['cluster']:<24}  {row['version']:>6}{pin:1}  {row['state']:<12}  {detail}"
        if args.output == "wide":
            line += f"  entry={row['entry'] or '-'} pinned={'yes' if row['pinned'] else 'no'}"
        print(line)
    return 0


def handle_diff(args: argparse.Namespace) -> int:
    diff = HubClient.from_args(args).get(
        blueprint_path(args.name, "diff"),
        {"from": str(args.from_version), "to": str(args.to_version)},
    )
    if args.output in ("json", "yaml"):
        write_document(diff, args.output)
        return 0
    print(f"blueprint {diff['name']} v{diff['from_version']} -> v{diff['to_version']}")
    if diff["selector"]:
        print(f"  selector: {diff['selector'][0] or '-'} -> {diff['selector'][1] or '-'}")
    if diff["drift_policy"]:
        print(
            f"  driftPolicy: {diff['drift_policy'][0] or '-'} -> {diff['drift_policy'][1] or '-'}"
        )
    for change in diff["changes"]:
        fields = f" ({', '.join(change['fields'])})" if change["fields"] else ""
        print(f"  {change['change']:<8} {change['taskset']}{fields}")
    if not diff["changes"] and not diff["selector"] and not diff["drift_policy"]:
        print("  no changes")
    return 0


def handle_assign(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    path = blueprint_path(args.name, "clusters", args.cluster)
    if args.remove:
        client.delete(path)
        print(f"cluster {args.cluster} unassigned from blueprint {args.name}")
    elif args.sync:
        client.post(path + "/sync")
        print(f"blueprint {args.name}: sync of {args.cluster} forced")
    else:
        client.put(path, {"pinned_version": args.version})
        pin = f", pinned to v{args.version}" if args.version else ""
        print(f"cluster {args.cluster} assigned to blueprint {args.name}{pin}")
    return 0
