"""`fleetbus override`: customise a taskset per cluster or per selector, and preview the result.

Values files are YAML mappings of Helm values; patch files are YAML, one patch or a list of
`{target: {kind, namespace, name}, mergePatch: {...}}` (RFC 7386) or `{target, jsonPatch: [...]}`
(RFC 6902). Precedence: selector overrides first, then cluster ones (which win), by name.

Every verb goes through the hub's API (`/api/v1/tasksets/{taskset}/overrides`): the hub checks
an override against the taskset's latest snapshot before it records it, and renders previews
(Helm values re-render the chart kept on the hub). Secret values come back masked.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from api.errors import InvalidRequest
from fleetbus.client import HubClient, add_hub_options
from fleetbus.output import Column, add_output_option, emit, when, write_document
from taskset.selectors import parse_selector


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("override", help="set, remove, list and preview overrides")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    set_ = verbs.add_parser("set", help="set (or replace) an override of a taskset")
    set_.add_argument("taskset", help="the taskset the override customises")
    set_.add_argument("--name", required=True, help="the override's name")
    where = set_.add_mutually_exclusive_group(required=True)
    where.add_argument("--cluster", default="", help="one cluster")
    where.add_argument("--selector", default="", help="clusters by label selector")
    what = set_.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--values",
        type=Path,
        default=None,
        metavar="FILE",
        help="Helm values (YAML) merged over the published ones",
    )
    what.add_argument(
        "--patch", type=Path, default=None, metavar="FILE", help="merge or JSON patches (YAML)"
    )
    set_.add_argument(
        "--sensitive",
        action="append",
        default=[],
        metavar="PATH",
        help="a dotted path of the values (db.password, hosts[0].token) sealed at rest and "
        "masked whatever its key; repeatable",
    )
    add_hub_options(set_)
    set_.set_defaults(handler=handle_set)

    rm = verbs.add_parser("rm", help="remove an override")
    rm.add_argument("taskset", help="the taskset the override belongs to")
    rm.add_argument("--name", required=True, help="the override to remove")
    add_hub_options(rm)
    rm.set_defaults(handler=handle_rm)

    ls = verbs.add_parser("ls", help="list a taskset's overrides in the order they apply")
    ls.add_argument("taskset", help="the taskset whose overrides to list")
    ls.add_argument(
        "-l",
        "--selector",
        default="",
        metavar="SELECTOR",
        help="only the overrides that apply to some cluster whose labels match (its own "
        "cluster does, or its selector matches one of them)",
    )
    add_output_option(ls)
    add_hub_options(ls)
    ls.set_defaults(handler=handle_ls)

    preview = verbs.add_parser("preview", help="diff what the overrides make on one cluster")
    preview.add_argument("taskset", help="the taskset to preview")
    preview.add_argument("--cluster", required=True, help="the cluster whose rendering to compare")
    add_output_option(preview, formats=("diff", "json", "yaml"), default="diff")
    add_hub_options(preview)
    preview.set_defaults(handler=handle_preview)


def read_yaml_file(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise InvalidRequest(f"cannot read {what} file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"{path}: not UTF-8 text (byte {e.start})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InvalidRequest(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from e


def overrides_path(taskset: str, *rest: str) -> str:
    """`/api/v1/tasksets/TASKSET/...`, each part quoted (the hub checks the names)."""
    return "/".join(
        ["/api/v1/tasksets", *(urllib.parse.quote(p, safe="") for p in (taskset, *rest))]
    )


def json_body(document: dict[str, Any], source: Path) -> bytes:
    """The request body; YAML can hold what JSON cannot (sets, binary), named as the file's."""
    try:
        return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as e:
        raise InvalidRequest(f"{source}: cannot be sent as JSON: {e}") from e


def handle_set(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    patches: list[Any] = []
    if args.values is not None:
        source = args.values
        loaded = read_yaml_file(args.values, "values")
        if not isinstance(loaded, dict) or not loaded:
            raise InvalidRequest(f"{args.values}: values must be a non-empty YAML mapping")
        values = loaded
    else:
        source = args.patch
        if args.sensitive:
            raise InvalidRequest(
                "--sensitive marks Helm values; a patch's Secret data and sensitive keys are "
                "sealed without it"
            )
        loaded = read_yaml_file(args.patch, "patch")
        patches = loaded if isinstance(loaded, list) else [loaded]
    body = json_body(
        {
            "cluster": args.cluster,
            "selector": args.selector,
            "values": values,
            "patches": patches,
            "sensitive": args.sensitive,
        },
        source,
    )
    client = HubClient.from_args(args)
    answer = orjson.loads(
        client.request(
            "PUT",
            overrides_path(args.taskset, "overrides", args.name),
            body=body,
            content_type="application/json",
        )
    )
    scope = (
        f"cluster {answer['cluster']}" if answer["cluster"] else f"selector {answer['selector']}"
    )
    print(f"override {answer['name']} of {answer['taskset']} set on {scope}")
    return 0


def handle_rm(args: argparse.Namespace) -> int:
    HubClient.from_args(args).delete(overrides_path(args.taskset, "overrides", args.name))
    print(f"override {args.name} of {args.taskset} removed")
    return 0


def touching(
    overrides: list[dict[str, Any]], clusters: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The overrides that apply to at least one of `clusters` (by name or by selector)."""
    names = {c["name"] for c in clusters}
    kept = []
    for override in overrides:
        if override["cluster"]:
            if override["cluster"] in names:
                kept.append(override)
            continue
        wanted = parse_selector(override["selector"])
        if any(wanted.matches(c.get("labels") or {}) for c in clusters):
            kept.append(override)
    return kept


def handle_ls(args: argparse.Namespace) -> int:
    wanted = parse_selector(args.selector) if args.selector else None
    client = HubClient.from_args(args)
    overrides: list[dict[str, Any]] = client.get(overrides_path(args.taskset, "overrides"))
    if wanted is not None:
        clusters = [
            c for c in client.get("/api/v1/clusters") if wanted.matches(c.get("labels") or {})
        ]
        overrides = touching(overrides, clusters)
    if args.output in ("json", "yaml"):
        rows = [
            {
                "name": o["name"],
                "cluster": o["cluster"],
                "selector": o["selector"],
                "kind": "values" if o["values"] else "patch",
                "set_at": datetime.fromisoformat(o["set_at"]).isoformat(),
                "actor": o["set_by"],
            }
            for o in overrides
        ]
        write_document(rows, args.output)
        return 0
    emit(overrides, args.output, columns=OVERRIDE_COLUMNS)
    return 0


OVERRIDE_COLUMNS = [
    Column("NAME", lambda o: o["name"]),
    Column("KIND", lambda o: "values" if o["values"] else "patch"),
    Column(
        "TARGET",
        lambda o: f"cluster {o['cluster']}" if o["cluster"] else f"selector {o['selector']}",
    ),
    Column("ACTOR", lambda o: o["set_by"]),
    Column("SET", lambda o: when(o["set_at"]), wide=True),
]


def handle_preview(args: argparse.Namespace) -> int:
    preview = HubClient.from_args(args).get(
        overrides_path(args.taskset, "overrides-preview"), {"cluster": args.cluster}
    )
    if args.output in ("json", "yaml"):
        write_document(preview, args.output)
        return 0
    applied = ", ".join(preview["overrides"]) or "none"
    print(
        f"# {preview['taskset']} v{preview['version']} on {preview['cluster']}; "
        f"overrides: {applied}",
        file=sys.stderr,
    )
    sys.stdout.write(preview["diff"] or "")
    if not preview["diff"]:
        print("# the overrides change nothing on this cluster", file=sys.stderr)
    return 0
