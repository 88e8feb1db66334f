"""`fleetbus render`: show the Taskset a chart, overlay or YAML bundle becomes, without publishing.

The output is the Taskset itself (phases `init`, `install`, `postInstall`, `preDelete`, each a
list of steps holding their Kubernetes `object`), as YAML or as one JSON document, byte for byte
the same for the same input. Secret values are masked unless `--show-secrets` is given. Objects
deliberately left out (test and rollback hooks) are listed on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson
import yaml

from normalizer import FORMATS, NormalizedSource, NormalizeOptions, load_values_file, normalize
from normalizer.sources import DEFAULT_NAMESPACE
from taskset.model import Taskset
from taskset.secrets import mask_secrets

STDIN = "-"


def add_source_arguments(parser: argparse.ArgumentParser, *, name_required: bool) -> None:
    """The arguments that say what to normalize and how (shared with `publish`)."""
    parser.add_argument(
        "path",
        metavar="PATH",
        help="a Helm chart (directory or .tgz), a Kustomize directory, a YAML file or "
        "directory, or - for a YAML stream on stdin",
    )
    parser.add_argument(
        "-f",
        "--values",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="Helm values file; repeat to merge several, later ones win",
    )
    parser.add_argument(
        "--name",
        required=name_required,
        metavar="N",
        help="taskset name (also the Helm release name)"
        + ("" if name_required else "; default: the chart's or the path's name"),
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=DEFAULT_NAMESPACE,
        metavar="NS",
        help=f"namespace of namespaced objects that name none (default: {DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="source format (default: detected from the path)",
    )


def normalize_from_args(args: argparse.Namespace) -> NormalizedSource:
    options = NormalizeOptions(
        name=args.name,
        namespace=args.namespace,
        format=args.format,
        values=[load_values_file(path) for path in args.values],
    )
    source: Path | bytes = sys.stdin.buffer.read() if args.path == STDIN else Path(args.path)
    normalized = normalize(source, options)
    for line in normalized.left_out:
        print(f"fleetbus: note: {line}", file=sys.stderr)
    return normalized


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the Taskset a chart, overlay or YAML bundle normalizes to",
        description=__doc__,
    )
    add_source_arguments(parser, name_required=False)
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    parser.add_argument(
        "--show-secrets", action="store_true", help="print Secret values instead of masking them"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    taskset = normalize_from_args(args).taskset
    if not args.show_secrets:
        taskset = mask_secrets(taskset)
    output = taskset_json(taskset) if args.output == "json" else taskset_yaml(taskset)
    sys.stdout.buffer.write(output)
    sys.stdout.flush()
    return 0


def taskset_json(taskset: Taskset) -> bytes:
    return orjson.dumps(msgspec.to_builtins(taskset), option=orjson.OPT_INDENT_2) + b"\n"


class _TasksetDumper(yaml.SafeDumper):
    """Block style for multi-line strings (scripts, config files), so they read as written."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_TasksetDumper.add_representer(str, _represent_str)


def taskset_yaml(taskset: Taskset) -> bytes:
    text = yaml.dump(
        msgspec.to_builtins(taskset),
        Dumper=_TasksetDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return text.encode("utf-8")
