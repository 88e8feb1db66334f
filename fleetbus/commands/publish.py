"""`fleetbus publish` and `fleetbus retire`: snapshot a taskset onto the log, or take it away.

The source is normalized before the hub is contacted, so a bad chart, overlay or bundle fails
with nothing written. Publishing the same content with the same placement and rollout again
prints "unchanged" and appends nothing.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api.publishing import publish_taskset, retire_taskset
from events.catalog import Placement, RolloutStrategy
from events.charts import ChartStore
from fleetbus.commands.render import add_source_arguments, normalize_from_args
from fleetbus.datadir import DEFAULT_DATA_DIR
from fleetbus.local import open_local_store
from normalizer import NormalizedSource


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def non_negative_seconds(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected seconds, like 30 or 2.5, got {text!r}") from e
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def local_actor() -> str:
    """Who runs the CLI on this machine, for the events' `actor`."""
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:local"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="publish a chart, overlay or YAML bundle as the next version of a taskset",
        description=__doc__,
    )
    add_source_arguments(parser, name_required=True)
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
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="D")
    parser.set_defaults(handler=handle_publish)

    retire = subparsers.add_parser(
        "retire", help="retire a taskset: every cluster removes it (running preDelete first)"
    )
    retire.add_argument("name", metavar="NAME")
    retire.add_argument("--reason", default="", help="why, for the audit log")
    retire.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="D")
    retire.set_defaults(handler=handle_retire)


def handle_publish(args: argparse.Namespace) -> Any:
    """Normalize first (no hub needed, nothing written on a bad source), then publish."""
    source = normalize_from_args(args)
    return _publish(args, source)


async def _publish(args: argparse.Namespace, source: NormalizedSource) -> int:
    placement = Placement(clusters=list(args.cluster), selector=args.selector)
    rollout = RolloutStrategy(
        batch_size=args.batch_size,
        max_unavailable=args.max_unavailable,
        pause_seconds=args.pause,
        failure_threshold=args.failure_threshold,
    )
    store = await open_local_store(args.data_dir)
    try:
        outcome = await publish_taskset(
            store,
            ChartStore(store.nc, timeout=store.timeout),
            source,
            actor=local_actor(),
            now=datetime.now(UTC),
            placement=placement,
            rollout=rollout,
        )
    finally:
        await store.close()
    if outcome.changed:
        print(
            f"published {outcome.taskset} v{outcome.version} ({outcome.digest}, "
            f"{outcome.body_size:,} bytes compressed) at sequence {outcome.sequence}"
        )
    else:
        print(f"unchanged: {outcome.taskset} v{outcome.version} ({outcome.digest})")
    return 0


async def handle_retire(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        outcome = await retire_taskset(
            store, args.name, actor=local_actor(), now=datetime.now(UTC), reason=args.reason
        )
    finally:
        await store.close()
    print(
        f"retired {outcome.taskset} (last version v{outcome.version}) "
        f"at sequence {outcome.sequence}"
    )
    return 0
