"""`fleetbus edge`: run one cluster's edge (leaf nats-server + connector) from its bundle."""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.edge import add_arguments, run_edge
from fleetbus.jsonlog import configure_logging


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "edge", help="run a cluster's edge: leaf nats-server and connector"
    )
    add_arguments(parser)
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    await run_edge(args.bundle, args.state_dir, args.kubeconfig, health_addr=args.health_addr)
    return 0
