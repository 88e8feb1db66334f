"""`fleetbus api`: serve the hub's HTTP API from one more process, on the hub's NATS cluster.

Several API processes (each with its own read models) answer any request alike: tokens,
clusters, the log and snapshots live in JetStream. The once-per-hub services (scheduling
under its lease, cluster access and revocation, provisioning, anti-entropy, notifications,
sources) stay with `fleetbus up`. Prepare the process's data dir once from the hub's with
`--from-data-dir` (it copies the NATS credentials and the keyring); the CA and the NATS
operator it takes from JetStream, where `fleetbus up` keeps them sealed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from api.oidc import load_oidc_config
from fleetbus.api_replica import ApiOptions, prepare_replica_dir, run_api
from fleetbus.commands.up import stream_replicas
from fleetbus.datadir import DataDir
from fleetbus.jsonlog import add_log_format_option, configure_logging
from fleetbus.options import add_api_tls_options, host_port, nats_urls


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "api",
        help="serve the hub's API from one more process (a hub on a NATS cluster)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        metavar="D",
        help="this process's data dir (its read models, admin token, NATS credentials, CA); "
        "not the hub's own",
    )
    parser.add_argument(
        "--from-data-dir",
        type=Path,
        default=None,
        metavar="HUB_D",
        help="first copy what an API process needs from the hub's data dir into --data-dir",
    )
    parser.add_argument(
        "--nats-url",
        type=nats_urls,
        required=True,
        metavar="URL[,URL...]",
        help="the hub's NATS: every node's URL",
    )
    parser.add_argument(
        "--http",
        type=host_port,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="address of this API process (default 127.0.0.1:8080)",
    )
    parser.add_argument(
        "--keys-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the hub's keyring directory, shared (same host or shared filesystem); "
        "default: the copy in --data-dir",
    )
    parser.add_argument(
        "--public-host",
        default=None,
        metavar="HOST",
        help="name edges dial, for nodes whose leafnode port listens on every address",
    )
    parser.add_argument(
        "--replicas",
        type=stream_replicas,
        default=1,
        metavar="N",
        help="replicas of the TOKENS stream if this process creates it (as `up --replicas`)",
    )
    parser.add_argument(
        "--oidc-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="accept single sign-on JWTs of an OIDC issuer (as `fleetbus up`)",
    )
    add_api_tls_options(parser)
    add_log_format_option(parser)
    parser.set_defaults(handler=handle)


async def handle(args: argparse.Namespace) -> int:
    if args.from_data_dir is not None:
        copied = prepare_replica_dir(DataDir(args.from_data_dir), DataDir(args.data_dir))
        print(f"copied {', '.join(copied)} from {args.from_data_dir} into {args.data_dir}")
    oidc = load_oidc_config(args.oidc_config) if args.oidc_config else None
    configure_logging(args.log_format)
    host, port = args.http
    await run_api(
        ApiOptions(
            data_dir=args.data_dir,
            nats_urls=args.nats_url,
            http_host=host,
            http_port=port,
            public_host=args.public_host,
            replicas=args.replicas,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_issue=args.tls_issue,
            oidc=oidc,
            keys_dir=args.keys_dir,
        )
    )
    return 0
