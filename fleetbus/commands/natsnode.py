"""`fleetbus nats-node`: the config of one node of the NATS cluster a hub runs on.

`fleetbus up --nats-url n1,n2,n3 --replicas 3` runs the hub on nats-servers it does not start.
Each of them must trust the hub's operator and offer edges a TLS leafnode listener with a
certificate from the hub's CA; this prints (or writes, 0600) such a config for one node, from
the hub's data dir (the operator, the system account, the CA: created there if this is the
first use). Run it once per node with that node's name, addresses and directory, and the same
`--routes` and route password for all of them. The config holds no user and never changes:
accounts and revocations reach every node through the nats-based resolver.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from access.private_files import write_private
from fleetbus.datadir import DEFAULT_DATA_DIR, DataDir
from fleetbus.errors import MissingOption
from fleetbus.hubcluster import ClusterNode, cluster_node_config
from taskset.names import check_name


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "nats-node",
        help="print the config of one node of a NATS cluster for this hub (`up --nats-url`)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="D",
        help="the hub's data dir, whose operator and CA the node trusts",
    )
    parser.add_argument("--name", required=True, help="the node's server name (unique)")
    parser.add_argument(
        "--home", type=Path, required=True, metavar="DIR", help="the node's store and resolver"
    )
    parser.add_argument("--host", default="0.0.0.0", help="client and route address")
    parser.add_argument("--port", type=port_number, default=4222, help="client port")
    parser.add_argument(
        "--monitor-port", type=port_number, default=8222, help="HTTP monitoring port"
    )
    parser.add_argument("--cluster-port", type=port_number, default=6222, help="route port")
    parser.add_argument("--leaf-port", type=port_number, default=443, help="edges dial this")
    parser.add_argument(
        "--routes",
        type=routes_list,
        required=True,
        metavar="HOST:PORT,...",
        help="the route address of every node (this one included)",
    )
    parser.add_argument(
        "--route-password-file",
        type=Path,
        required=True,
        metavar="FILE",
        help="the routes' shared password (one line; the same file for every node)",
    )
    parser.add_argument(
        "--cluster-name",
        default="fleetbus-hub",
        help="the NATS cluster's name (the same on every node)",
    )
    parser.add_argument(
        "--public-host", default=None, help="the name edges dial (in the server certificate)"
    )
    parser.add_argument("--out", type=Path, default=None, metavar="FILE", help="write here (0600)")
    parser.set_defaults(handler=handle)


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {port}")
    return port


def routes_list(text: str) -> list[tuple[str, int]]:
    routes = []
    for item in (part.strip() for part in text.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"a route is HOST:PORT, not {item!r}")
        routes.append((host, int(port)))
    return routes


def route_password(path: Path) -> str:
    try:
        password = path.read_text().strip()
    except OSError as e:
        raise MissingOption(f"--route-password-file {path}: {e.strerror or e}") from e
    if not password or any(c in password for c in "@:/ \t"):
        raise MissingOption(
            f"--route-password-file {path}: one line of letters and digits is needed "
            "(no '@', ':', '/' or spaces)"
        )
    return password


def handle(args: argparse.Namespace) -> int:
    check_name("node", args.name)
    password = route_password(args.route_password_file)
    node = ClusterNode(
        server_name=args.name,
        host=args.host,
        port=args.port,
        monitor_port=args.monitor_port,
        cluster_port=args.cluster_port,
        leaf_port=args.leaf_port,
        leaf_host="0.0.0.0",
        home=args.home.resolve(),
    )
    config = cluster_node_config(
        DataDir(args.data_dir),
        node,
        cluster_name=args.cluster_name,
        route_password=password,
        routes=[f"nats-route://route:{password}@{host}:{port}" for host, port in args.routes],
        public_host=args.public_host,
        now=datetime.now(UTC),
    )
    if args.out is None:
        sys.stdout.write(config)
    else:
        write_private(args.out, config.encode())
    return 0
