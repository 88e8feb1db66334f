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

from normalizer import FORMATS, NormalizedSource, NormalizeOptions, load_values_file, normalize
from normalizer.capabilities import Capabilities
from normalizer.kubeyaml import dump_yaml
from normalizer.sources import DEFAULT_NAMESPACE
from normalizer.taskset_spec import DRIFT_POLICIES
from taskset.model import Taskset
from taskset.secrets import mask_secrets

STDIN = "-"


def add_source_arguments(
    parser: argparse.ArgumentParser, *, name_required: bool, path_optional: bool = False
) -> None:
    """The arguments that say what to normalize and how (shared with `publish`)."""
    parser.add_argument(
        "path",
        metavar="PATH",
        nargs="?" if path_optional else None,
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
    spec = parser.add_argument_group("taskset spec (wins over a fleetbus.yaml beside the source)")
    spec.add_argument(
        "--drift-policy",
        choices=DRIFT_POLICIES,
        default=None,
        help="what edits made on the cluster get: correct (re-apply), report, or ignore",
    )
    spec.add_argument(
        "--ignore-path",
        action="append",
        default=None,
        metavar="POINTER",
        help="a JSON pointer drift leaves alone on every object (e.g. /spec/replicas); repeat",
    )
    spec.add_argument(
        "--adopt",
        action="store_true",
        default=None,
        help="take over objects that exist already instead of failing with a conflict",
    )


def spec_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The taskset spec fields given on the command line (fleetbus.yaml's names)."""
    given = {
        "driftPolicy": getattr(args, "drift_policy", None),
        "ignorePaths": getattr(args, "ignore_path", None),
        "adopt": getattr(args, "adopt", None),
    }
    return {key: value for key, value in given.items() if value is not None}


def add_capability_arguments(parser: argparse.ArgumentParser) -> None:
    """What cluster a Helm chart is rendered for, like `helm template`'s flags."""
    parser.add_argument(
        "--kube-version",
        default=None,
        metavar="V",
        help="Kubernetes version a Helm chart's .Capabilities.KubeVersion reports "
        "(default: Helm's, v1.36.0)",
    )
    parser.add_argument(
        "-a",
        "--api-versions",
        action="append",
        default=[],
        metavar="G/V[/Kind]",
        help="an API version (or version and kind) .Capabilities.APIVersions has, "
        "besides the built-in ones; repeat, or separate with commas",
    )


def normalize_from_args(args: argparse.Namespace) -> NormalizedSource:
    api_versions = tuple(
        version.strip()
        for given in getattr(args, "api_versions", [])
        for version in given.split(",")
        if version.strip()
    )
    options = NormalizeOptions(
        name=args.name,
        namespace=args.namespace,
        format=args.format,
        values=[load_values_file(path) for path in args.values],
        capabilities=Capabilities(getattr(args, "kube_version", None), api_versions),
        settings=spec_settings(args),
        settings_label="the command line",
    )
    source: Path | bytes = sys.stdin.buffer.read() if args.path == STDIN else Path(args.path)
    normalized = normalize(source, options)
    for line in (*normalized.left_out, *normalized.notes):
        print(f"fleetbus: note: {line}", file=sys.stderr)
    return normalized


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the Taskset a chart, overlay or YAML bundle normalizes to",
        description=__doc__,
    )
    add_source_arguments(parser, name_required=False)
    add_capability_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        default="yaml",
        help="output format: yaml, json (default yaml)",
    )
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


def taskset_yaml(taskset: Taskset) -> bytes:
    """The Taskset as YAML (libyaml's emitter) that Kubernetes reads back unchanged."""
    return dump_yaml(msgspec.to_builtins(taskset)).encode("utf-8")
