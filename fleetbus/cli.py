"""The `fleetbus` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from taskset.errors import FleetbusError

COMMANDS = (
    "fleetbus.commands.edge",
    "fleetbus.commands.up",
    "fleetbus.commands.events",
    "fleetbus.commands.render",
    "fleetbus.commands.publish",
    "fleetbus.commands.token",
    "fleetbus.commands.scheduler",
    "fleetbus.commands.cluster",
    "fleetbus.commands.override",
    "fleetbus.commands.blueprint",
    "fleetbus.commands.rollout",
    "fleetbus.commands.status",
    "fleetbus.commands.state",
    "fleetbus.commands.projector",
    "fleetbus.commands.controller",
)


EDGE_ONLY = ("fleetbus.commands.edge",)
"""`fleetbus edge` loads only its own module: an edge install has no hub packages."""
CONTROLLER_ONLY = ("fleetbus.commands.controller",)
"""`fleetbus controller` runs at the edge too: it loads only its own module."""


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetbus",
        description="Run configuration across a fleet of Kubernetes clusters.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(
        EDGE_ONLY
        if words[:1] == ["edge"]
        else CONTROLLER_ONLY
        if words[:1] == ["controller"]
        else COMMANDS
    )
    args = parser.parse_args(words)
    try:
        code = args.handler(args)
        if asyncio.iscoroutine(code):
            code = asyncio.run(code)
        return int(code or 0)
    except FleetbusError as e:
        print(f"fleetbus: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
