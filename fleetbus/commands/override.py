"""`fleetbus override`: customise a taskset per cluster or per selector, and preview the result.

Values files are YAML mappings of Helm values; patch files are YAML, one patch or a list of
`{target: {kind, namespace, name}, mergePatch: {...}}` (RFC 7386) or `{target, jsonPatch: [...]}`
(RFC 6902). Precedence: selector overrides first, then cluster ones (which win), by name.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from api.errors import InvalidRequest
from api.overrides import (
    SetOverride,
    list_overrides,
    preview_overrides,
    remove_override,
    set_override,
)
from events.charts import ChartStore
from fleetbus.commands.publish import local_actor
from fleetbus.datadir import DEFAULT_DATA_DIR
from fleetbus.local import open_local_store
from fleetbus.renderer import ChartArchiveRenderer


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("override", help="set, remove, list and preview overrides")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    set_ = verbs.add_parser(
        "set", parents=[common], help="set (or replace) an override of a taskset"
    )
    set_.add_argument("taskset")
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
    set_.set_defaults(handler=handle_set)

    rm = verbs.add_parser("rm", parents=[common], help="remove an override")
    rm.add_argument("taskset")
    rm.add_argument("--name", required=True)
    rm.set_defaults(handler=handle_rm)

    ls = verbs.add_parser(
        "ls", parents=[common], help="list a taskset's overrides in the order they apply"
    )
    ls.add_argument("taskset")
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    ls.set_defaults(handler=handle_ls)

    preview = verbs.add_parser(
        "preview", parents=[common], help="diff what the overrides make on one cluster"
    )
    preview.add_argument("taskset")
    preview.add_argument("--cluster", required=True)
    preview.set_defaults(handler=handle_preview)


def read_yaml_file(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        raise InvalidRequest(f"cannot read {what} file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InvalidRequest(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from e


async def handle_set(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    patches: list[dict[str, Any]] = []
    if args.values is not None:
        loaded = read_yaml_file(args.values, "values")
        if not isinstance(loaded, dict) or not loaded:
            raise InvalidRequest(f"{args.values}: values must be a non-empty YAML mapping")
        values = loaded
    else:
        loaded = read_yaml_file(args.patch, "patch")
        patches = loaded if isinstance(loaded, list) else [loaded]
    command = SetOverride(
        taskset=args.taskset,
        name=args.name,
        cluster=args.cluster,
        selector=args.selector,
        values=values,
        patches=patches,
        actor=local_actor(),
    )
    store = await open_local_store(args.data_dir)
    try:
        event = await set_override(store, command, datetime.now(UTC))
    finally:
        await store.close()
    scope = f"cluster {event.cluster}" if event.cluster else f"selector {event.selector}"
    print(f"override {event.name} of {event.taskset} set on {scope}")
    return 0


async def handle_rm(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        await remove_override(
            store, args.taskset, args.name, actor=local_actor(), now=datetime.now(UTC)
        )
    finally:
        await store.close()
    print(f"override {args.name} of {args.taskset} removed")
    return 0


async def handle_ls(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        overrides = await list_overrides(store, args.taskset)
    finally:
        await store.close()
    if args.output == "json":
        rows = [
            {
                "name": o.name,
                "cluster": o.cluster,
                "selector": o.selector,
                "kind": "values" if o.values else "patch",
                "set_at": o.occurred_at.isoformat(),
                "actor": o.actor,
            }
            for o in overrides
        ]
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(f"{'NAME':<24}  {'KIND':<7}  {'TARGET':<32}  ACTOR")
    for o in overrides:
        target = f"cluster {o.cluster}" if o.cluster else f"selector {o.selector}"
        kind = "values" if o.values else "patch"
        print(f"{o.name:<24}  {kind:<7}  {target:<32}  {o.actor}")
    return 0


async def handle_preview(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        renderer = ChartArchiveRenderer(ChartStore(store.nc))
        preview = await preview_overrides(store, args.taskset, args.cluster, renderer)
    finally:
        await store.close()
    applied = ", ".join(preview.overrides) or "none"
    print(
        f"# {preview.taskset} v{preview.version} on {preview.cluster}; overrides: {applied}",
        file=sys.stderr,
    )
    sys.stdout.write(preview.diff or "")
    if not preview.diff:
        print("# the overrides change nothing on this cluster", file=sys.stderr)
    return 0
