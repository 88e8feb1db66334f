"""`fleetbus publish` and `fleetbus retire`: snapshot a taskset onto the log, or take it away.

The source is normalized before the hub is contacted, so a bad chart, overlay or bundle fails
with nothing written. Publishing the same content with the same placement and rollout again
prints "unchanged" and appends nothing. Both talk to the hub's API (`fleetbus.client`): the
source is uploaded (`fleetbus.uploads`) and the hub normalizes and publishes it; `--wait`
then follows the rollout (`fleetbus.rollout_wait`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from fleetbus.client import HubClient, Upload, add_hub_options
from fleetbus.commands.render import STDIN, add_source_arguments, spec_settings
from fleetbus.datadir import DEFAULT_DATA_DIR
from fleetbus.errors import ConflictingOptions, MissingOption
from fleetbus.rollout_wait import wait_for_rollout
from fleetbus.source_options import (
    add_remote_arguments,
    provenance_text,
    remote_spec,
    wants_remote,
)
from fleetbus.uploads import PackedSource, pack_source
from normalizer import (
    NormalizedSource,
    NormalizeOptions,
    load_values_file,
    merge_values,
    normalize,
)

DATA_DIR_HELP = "data dir of a local hub started by `fleetbus up` (default ./.fleetbus)"


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected seconds, like 30 or 2.5, got {text!r}") from e
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def add_placement_arguments(parser: argparse.ArgumentParser, *, depends_on: bool = True) -> None:
    """Where a taskset goes and how a new version spreads (shared with `source add`)."""
    placement = parser.add_argument_group("placement (where the taskset goes)")
    placement.add_argument(
        "--selector", default="", metavar="S", help="label selector of clusters, e.g. env=prod"
    )
    placement.add_argument(
        "--cluster",
        action="append",
        default=[],
        metavar="C",
        help="a cluster by name; repeat for several",
    )
    if depends_on:
        placement.add_argument(
            "--depends-on",
            action="append",
            default=None,
            metavar="T",
            help=(
                "a taskset that must be applied and Ready on a cluster first; repeat for several; "
                "--depends-on '' removes them (default: keep what was recorded)"
            ),
        )
    rollout = parser.add_argument_group("rollout (how a new version spreads)")
    rollout.add_argument(
        "--batch-size",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="clusters per wave (default 0: all at once)",
    )
    rollout.add_argument(
        "--max-unavailable",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="clusters updating at once (default 0: no cap beyond the wave)",
    )
    rollout.add_argument(
        "--pause",
        type=non_negative_seconds,
        default=0.0,
        metavar="S",
        help="seconds to wait between waves",
    )
    rollout.add_argument(
        "--failure-threshold",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="failed clusters tolerated before the rollout halts",
    )


def spec_parts(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The placement and rollout documents of the API from the arguments."""
    return (
        {"clusters": list(args.cluster), "selector": args.selector},
        {
            "batch_size": args.batch_size,
            "max_unavailable": args.max_unavailable,
            "pause_seconds": args.pause,
            "failure_threshold": args.failure_threshold,
        },
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish a chart, overlay or YAML bundle as the next version of a taskset",
        description="Publish a Helm chart, Kustomize overlay or YAML bundle (a PATH, or "
        "fetched by the hub with --chart, --repo or --git) as the next immutable version of "
        "taskset --name, placed on the clusters --cluster and --selector name and rolled out "
        "in waves. The source is normalized before the hub is contacted, so a bad chart, "
        "overlay or bundle fails with nothing written; the same content, placement and rollout "
        'again prints "unchanged" and appends nothing. --wait follows the rollout and exits '
        "non-zero if it halts.",
    )
    add_source_arguments(parser, name_required=False, path_optional=True)
    add_remote_arguments(parser, required=False)
    add_placement_arguments(parser)
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the rollout with a progress bar; exit non-zero if it halts",
    )
    parser.add_argument(
        "--wait-timeout",
        type=non_negative_seconds,
        default=600.0,
        metavar="S",
        help="give up waiting after S seconds (default 600)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="D", help=DATA_DIR_HELP
    )
    add_hub_options(parser)
    parser.set_defaults(handler=handle_publish)

    rollback = subparsers.add_parser(
        "rollback",
        help="publish an earlier version's snapshot again, as the next version",
        description="Publish the snapshot of version N again as the taskset's next version: "
        "clusters upgrade to it (upgrade hooks run). The new version's event is caused by "
        "version N's, so the log says what it rolled back to.",
    )
    rollback.add_argument("name", metavar="NAME", help="the taskset to roll back")
    rollback.add_argument(
        "--to-version", type=positive_int, required=True, metavar="N", help="the version to restore"
    )
    rollback.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="D", help=DATA_DIR_HELP
    )
    add_hub_options(rollback)
    rollback.set_defaults(handler=handle_rollback)

    retire = subparsers.add_parser(
        "retire", help="retire a taskset: every cluster removes it (running preDelete first)"
    )
    retire.add_argument("name", metavar="NAME", help="the taskset to retire")
    retire.add_argument("--reason", default="", help="why, for the audit log")
    retire.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="D", help=DATA_DIR_HELP
    )
    add_hub_options(retire)
    retire.set_defaults(handler=handle_retire)


def handle_publish(args: argparse.Namespace) -> int:
    """Normalize first (no hub needed, nothing written on a bad source), then publish.

    With --chart, --repo or --git the hub fetches the source, normalizes and publishes it."""
    if wants_remote(args):
        return publish_remote(args)
    if args.path is None:
        raise MissingOption("name what to publish: a PATH, or --chart, --repo or --git")
    if args.name is None:
        raise MissingOption("publishing a PATH needs --name N")
    stdin = sys.stdin.buffer.read() if args.path == STDIN else None
    source = normalize_locally(args, stdin)
    packed = (
        PackedSource(Upload("stdin.yaml", stdin, "application/yaml"))
        if stdin is not None
        else pack_source(Path(args.path))
    )
    spec = {
        "name": args.name,
        "namespace": args.namespace,
        "format": source.taskset.source.format if source.taskset.source else args.format,
        "values": source.values,
        "path": packed.path,
        "settings": spec_settings(args),
    }
    spec["placement"], spec["rollout"] = spec_parts(args)
    if args.depends_on is not None:
        spec["depends_on"] = [name for name in args.depends_on if name]
    client = HubClient.from_args(args)
    outcome = client.post_multipart(
        "/api/v1/tasksets", {"spec": orjson.dumps(spec).decode()}, {"source": packed.upload}
    )
    if outcome["changed"]:
        print(
            f"published {outcome['taskset']} v{outcome['version']} ({outcome['digest']}, "
            f"{outcome['body_size']:,} bytes compressed) at sequence {outcome['sequence']}"
        )
    else:
        print(f"unchanged: {outcome['taskset']} v{outcome['version']} ({outcome['digest']})")
    if args.wait:
        return wait_for_rollout(
            client, outcome["taskset"], outcome["version"], timeout_s=args.wait_timeout
        )
    return 0


def publish_remote(args: argparse.Namespace) -> int:
    if args.path is not None:
        raise ConflictingOptions(
            f"give either PATH ({args.path}) or a remote source (--chart, --repo, --git)"
        )
    if args.format is not None:
        raise ConflictingOptions("--format applies to a PATH; the hub detects a remote source's")
    placement, rollout = spec_parts(args)
    body: dict[str, Any] = {
        "source": remote_spec(args),
        "name": args.name,
        "namespace": args.namespace,
        "values": merge_values([load_values_file(path) for path in args.values]),
        "placement": placement,
        "rollout": rollout,
    }
    if args.depends_on is not None:
        body["depends_on"] = [name for name in args.depends_on if name]
    client = HubClient.from_args(args)
    outcome = client.post("/api/v1/tasksets/remote", body)
    for line in outcome.get("notes") or []:
        print(f"fleetbus: note: {line}", file=sys.stderr)
    origin = provenance_text(outcome.get("provenance"))
    if outcome["changed"]:
        print(
            f"published {outcome['taskset']} v{outcome['version']} ({outcome['digest']}, "
            f"{outcome['body_size']:,} bytes compressed) at sequence {outcome['sequence']} "
            f"from {origin}"
        )
    else:
        print(f"unchanged: {outcome['taskset']} v{outcome['version']} ({outcome['digest']})")
    if args.wait:
        return wait_for_rollout(
            client, outcome["taskset"], outcome["version"], timeout_s=args.wait_timeout
        )
    return 0


def normalize_locally(args: argparse.Namespace, stdin: bytes | None) -> NormalizedSource:
    options = NormalizeOptions(
        name=args.name,
        namespace=args.namespace,
        format=args.format,
        values=[load_values_file(path) for path in args.values],
        settings=spec_settings(args),
        settings_label="the command line",
    )
    normalized = normalize(stdin if stdin is not None else Path(args.path), options)
    for line in (*normalized.left_out, *normalized.notes):
        print(f"fleetbus: note: {line}", file=sys.stderr)
    return normalized


def handle_rollback(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    outcome = client.post(f"/api/v1/tasksets/{args.name}/rollback", {"to_version": args.to_version})
    if outcome["changed"]:
        print(
            f"rolled {outcome['taskset']} back to v{args.to_version}'s snapshot: published as "
            f"v{outcome['version']} ({outcome['digest']}) at sequence {outcome['sequence']}"
        )
    else:
        print(
            f"unchanged: {outcome['taskset']} v{outcome['version']} is v{args.to_version}'s "
            "snapshot already"
        )
    return 0


def handle_retire(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    outcome = client.post(f"/api/v1/tasksets/{args.name}/retire", {"reason": args.reason})
    print(
        f"retired {outcome['taskset']} (last version v{outcome['version']}) "
        f"at sequence {outcome['sequence']}"
    )
    return 0
