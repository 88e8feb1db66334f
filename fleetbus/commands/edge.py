"""`fleetbus edge`: run one cluster's edge (leaf, connector, controller) from its bundle."""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.edge import add_arguments, controller_settings, leaf_limits, run_edge
from fleetbus.jsonlog import configure_logging


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "edge",
        help="run a cluster's edge: leaf nats-server, connector and (with --kubeconfig) the "
        "cluster controller",
    )
    add_arguments(parser)
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    controller = controller_settings(args)
    await run_edge(
        args.bundle,
        args.state_dir,
        args.kubeconfig,
        health_addr=args.health_addr,
        controller=controller,
        limits=leaf_limits(args),
    )
    return 0
