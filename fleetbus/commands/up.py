"""`fleetbus up`: start the embedded hub."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fleetbus.datadir import DEFAULT_DATA_DIR
from fleetbus.hub import HubOptions, run_hub
from fleetbus.options import host_port


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("up", help="start the embedded hub")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--http",
        type=host_port,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="API and dashboard address",
    )
    parser.add_argument("--nats-port", type=int, default=4222)
    parser.add_argument(
        "--leaf-port", type=int, default=443, help="TLS leafnode port edges dial (443 needs root)"
    )
    parser.add_argument(
        "--sim-clusters", type=int, default=0, metavar="N", help="also run N simulated clusters"
    )
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    host, port = args.http
    await run_hub(
        HubOptions(
            data_dir=args.data_dir,
            http_host=host,
            http_port=port,
            nats_port=args.nats_port,
            leaf_port=args.leaf_port,
            sim_clusters=args.sim_clusters,
        )
    )
    return 0
