"""`fleetbus project`: create, list and show projects (tenants), and set their quotas.

Every hub has the `default` project; `create` and `quota` are for org admins, `share` for the
project's own admins (other projects may then use what it shares, read-only). A quota of 0 means
no limit. `show` prints a project's quotas beside what it uses of them. Every other command
acts in the project `--project` (or `FLEETBUS_PROJECT`) names.
"""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.client import HubClient, add_hub_options
from fleetbus.errors import MissingOption
from fleetbus.options import byte_size, whole_number
from fleetbus.output import Column, add_output_option, emit, when

QUOTAS = ("clusters", "tasksets", "log_bytes")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "project", help="create, list and show projects (tenants) and their quotas"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    create = verbs.add_parser("create", help="create a project (org admins)")
    create.add_argument(
        "name", help="the project's name (lower case, at most 20 characters, no '--')"
    )
    create.add_argument("--description", default="", metavar="TEXT", help="what the project is for")
    _quota_options(create, default=0)
    add_hub_options(create)
    create.set_defaults(handler=handle_create)

    ls = verbs.add_parser("ls", help="the projects you hold a role in (all, for org tokens)")
    add_output_option(ls)
    add_hub_options(ls)
    ls.set_defaults(handler=handle_ls)

    show = verbs.add_parser("show", help="a project's quotas and what it uses of them")
    show.add_argument("name", help="the project")
    add_output_option(show)
    add_hub_options(show)
    show.set_defaults(handler=handle_show)

    share = verbs.add_parser(
        "share",
        help="share tasksets and blueprints read-only with every other project (project "
        "admins); exactly those given: the rest stops being shared",
    )
    share.add_argument("name", help="the project whose tasksets and blueprints are shared")
    share.add_argument("--taskset", action="append", default=[], metavar="T", help="repeatable")
    share.add_argument("--blueprint", action="append", default=[], metavar="B", help="repeatable")
    add_hub_options(share)
    share.set_defaults(handler=handle_share)

    quota = verbs.add_parser(
        "quota", help="set a project's quotas (org admins); those not given stay as they are"
    )
    quota.add_argument("name", help="the project whose quotas are set")
    _quota_options(quota, default=None)
    add_hub_options(quota)
    quota.set_defaults(handler=handle_quota)


def _quota_options(parser: argparse.ArgumentParser, *, default: int | None) -> None:
    parser.add_argument(
        "--clusters", type=whole_number(0), default=default, metavar="N", help="0: no limit"
    )
    parser.add_argument(
        "--tasksets", type=whole_number(0), default=default, metavar="N", help="0: no limit"
    )
    parser.add_argument(
        "--log-bytes",
        type=byte_size,
        default=default,
        metavar="SIZE",
        help="log its tasksets' snapshots may take, e.g. 500MiB (0: no limit)",
    )


def _given_quotas(args: argparse.Namespace) -> dict[str, int]:
    return {q: getattr(args, q) for q in QUOTAS if getattr(args, q) is not None}


def handle_create(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    created = client.post(
        "/api/v1/projects",
        {"name": args.name, "description": args.description, "quotas": _given_quotas(args)},
    )
    print(f"created project {created['name']} ({_quota_text(created['quotas'])})")
    return 0


def handle_ls(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    projects = client.get("/api/v1/projects")
    emit(projects, args.output, columns=PROJECT_COLUMNS)
    return 0


def handle_show(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    project = client.get(f"/api/v1/projects/{args.name}")
    if args.output in ("json", "yaml"):
        emit(project, args.output)
        return 0
    usage = project.get("usage") or {}
    quotas = project["quotas"]
    print(f"project:     {project['name']}")
    print(f"description: {project.get('description') or '-'}")
    print(f"created:     {when(project.get('created_at'))} by {project.get('created_by') or '-'}")
    for quota in QUOTAS:
        limit = quotas.get(quota, 0)
        print(
            f"{quota + ':':<12} {usage.get(quota, 0):,} of {f'{limit:,}' if limit else 'no limit'}"
        )
    return 0


def handle_share(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    if client.project is None:
        client.project = args.name
    shared = client.put(
        f"/api/v1/projects/{args.name}/shares",
        {"tasksets": args.taskset, "blueprints": args.blueprint},
    )
    names = [*shared["shared_tasksets"], *shared["shared_blueprints"]]
    print(f"project {shared['name']} shares {', '.join(names) or 'nothing'}")
    return 0


def handle_quota(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    given = _given_quotas(args)
    if not given:
        raise MissingOption(
            "project quota: give at least one of --clusters, --tasksets, --log-bytes"
        )
    current = client.get(f"/api/v1/projects/{args.name}")["quotas"]
    updated = client.put(f"/api/v1/projects/{args.name}/quotas", {**current, **given})
    print(f"project {updated['name']}: {_quota_text(updated['quotas'])}")
    return 0


def _quota_text(quotas: dict[str, int]) -> str:
    return ", ".join(f"{q} {quotas.get(q) or 'unlimited'}" for q in QUOTAS)


PROJECT_COLUMNS = [
    Column("NAME", lambda p: p["name"]),
    Column("CLUSTERS", lambda p: p["quotas"].get("clusters") or "-"),
    Column("TASKSETS", lambda p: p["quotas"].get("tasksets") or "-"),
    Column("LOG BYTES", lambda p: p["quotas"].get("log_bytes") or "-"),
    Column("CREATED", lambda p: when(p.get("created_at"))),
    Column("DESCRIPTION", lambda p: p.get("description"), wide=True),
]
