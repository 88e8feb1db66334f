"""`fleetbus up`: start the embedded hub."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from access.pki import HubPki
from api.oidc import load_oidc_config
from fleetbus.api_replica import missing_replica_files, prepare_replica_dir
from fleetbus.api_tls import api_tls
from fleetbus.datadir import DEFAULT_DATA_DIR, DataDir
from fleetbus.errors import ConflictingOptions, HubNotFound
from fleetbus.hub import HubOptions, run_hub
from fleetbus.hub_lease import HUB_LEASE_TTL_RANGE_S, HUB_LEASE_TTL_S
from fleetbus.jsonlog import add_log_format_option, configure_logging
from fleetbus.options import (
    add_api_tls_options,
    archive_interval,
    host_port,
    memory_limit,
    nats_urls,
    port,
    retention_policy,
    whole_number,
)
from scheduler.snapshot_retention import ARCHIVE_EVERY_S
from scheduler.snapshot_store import SNAPSHOT_EVERY, SNAPSHOT_KEEP
from simulator.fleet import IN_PROCESS_SIM_LIMIT, SIMS_PER_PROCESS, sim_processes_for
from sources.errors import InvalidSourceReference
from sources.references import parse_allowed_host


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("up", help="start the embedded hub")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="D",
        help="where the hub keeps its NATS store, read models, keys and tokens "
        "(default ./.fleetbus)",
    )
    add_log_format_option(parser)
    parser.add_argument(
        "--http",
        type=host_port,
        default=("127.0.0.1", 8080),
        metavar="HOST:PORT",
        help="address of the API and dashboard (default 127.0.0.1:8080)",
    )
    parser.add_argument(
        "--oidc-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="accept single sign-on JWTs of an OIDC issuer, groups mapped to project roles "
        "(YAML: issuer, audience, roles; see the README)",
    )
    parser.add_argument(
        "--nats-port",
        type=port,
        default=4222,
        metavar="P",
        help="client port of the embedded nats-server, on loopback (default 4222)",
    )
    parser.add_argument(
        "--leaf-port",
        type=port,
        default=443,
        metavar="P",
        help="TLS leafnode port edges dial (default 443, which needs root or CAP_NET_BIND_SERVICE)",
    )
    parser.add_argument(
        "--leaf-ws-port",
        type=port,
        default=None,
        metavar="P",
        help="also accept edges' leaf connections over WebSocket (wss://) on this port",
    )
    parser.add_argument(
        "--leaf-host", default="0.0.0.0", metavar="ADDR", help="address the leafnode port binds"
    )
    parser.add_argument(
        "--public-host",
        default=None,
        metavar="HOST",
        help="name edges dial to reach this hub (hub certificate SAN, bundles' hub URLs)",
    )
    parser.add_argument(
        "--sim-clusters",
        type=whole_number(0),
        default=0,
        metavar="N",
        help="also run N simulated clusters",
    )
    parser.add_argument(
        "--no-scheduler",
        dest="scheduler",
        action="store_false",
        help="run no scheduler in the hub: scheduling is left to `fleetbus scheduler` "
        "processes (its own core; several for failover, one leads)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=whole_number(0),
        default=SNAPSHOT_EVERY,
        metavar="N",
        help="the scheduler snapshots its fold of the log every N events, so restarts and "
        f"`state --at` start from a snapshot (default {SNAPSHOT_EVERY:,}; 0: never)",
    )
    parser.add_argument(
        "--snapshot-keep",
        type=whole_number(1),
        default=SNAPSHOT_KEEP,
        metavar="K",
        help=f"keep the K newest snapshots (default {SNAPSHOT_KEEP})",
    )
    parser.add_argument(
        "--events-retain",
        type=retention_policy,
        default=None,
        metavar="LIMITS",
        help="keep this window of events live (age=90d,events=5000000,bytes=20GiB, any of "
        "them); older ones move to hash-chained archive segments, read as before (default: "
        "keep all; only for a hub whose EVENTS was created with it)",
    )
    parser.add_argument(
        "--events-archive-every",
        type=archive_interval,
        default=ARCHIVE_EVERY_S,
        metavar="S",
        help=f"seconds between two archiving passes (default {ARCHIVE_EVERY_S:.0f})",
    )
    parser.add_argument(
        "--sim-processes",
        type=int,
        default=None,
        metavar="K",
        help="run the simulated clusters in K worker processes, each connecting its share to "
        f"the hub as plain NATS clients (default: in the hub process up to "
        f"{IN_PROCESS_SIM_LIMIT:,} clusters, else one worker per {SIMS_PER_PROCESS:,})",
    )
    parser.add_argument(
        "--nats-url",
        type=nats_urls,
        default=(),
        metavar="URL[,URL...]",
        help="run on this external NATS cluster (every node's URL) instead of the embedded "
        "nats-server; render each node's config with `fleetbus nats-node`; --leaf-* "
        "options apply to the embedded server only",
    )
    parser.add_argument(
        "--nats-memory-limit",
        type=memory_limit,
        default=None,
        metavar="SIZE",
        help="soft memory limit of the embedded nats-server, e.g. 768MiB or 2GiB (Go's "
        "GOMEMLIMIT): it collects and returns freed memory sooner as it nears the limit; "
        "set it below the memory the hub's host or container may use",
    )
    parser.add_argument(
        "--replicas",
        type=stream_replicas,
        default=1,
        metavar="N",
        help="replicas of every hub stream (3 on a 3-node cluster survives losing a node)",
    )
    parser.add_argument(
        "--standby",
        action="store_true",
        help="with --nats-url: wait as a hot standby for the hub lease, however long, and take "
        "over within one lease TTL of the active hub dying or stopping",
    )
    parser.add_argument(
        "--from-data-dir",
        type=Path,
        default=None,
        metavar="HUB_D",
        help="with --nats-url: first copy the hub's NATS logins and keyring from its data dir "
        "HUB_D into --data-dir (what a standby on another host needs; the CA and the NATS "
        "operator come from JetStream)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=whole_number(*HUB_LEASE_TTL_RANGE_S),
        default=HUB_LEASE_TTL_S,
        metavar="S",
        help="with --nats-url: how long the hub's leases (the hub's and its scheduler's) "
        "outlive a process that died without releasing them; renewed every third of it "
        f"(default {HUB_LEASE_TTL_S})",
    )
    sources = parser.add_argument_group("sources (charts and overlays the hub fetches)")
    sources.add_argument(
        "--source-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        type=allowed_source_host,
        help="a host the hub may fetch Helm repositories, OCI registries and Git repositories "
        "from (without a port: any port); repeat for several; none: no remote sources",
    )
    sources.add_argument(
        "--source-timeout",
        type=source_timeout,
        default=120.0,
        metavar="S",
        help="seconds one fetch may take (default 120)",
    )
    add_api_tls_options(parser)
    parser.set_defaults(handler=handle)


def allowed_source_host(text: str) -> str:
    try:
        parse_allowed_host(text)
    except InvalidSourceReference as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def source_timeout(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from e
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be 1 to 3600 seconds, got {text}")
    return value


def stream_replicas(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 5:
        raise argparse.ArgumentTypeError(
            f"replicas must be 1 to 5 (JetStream's limit), not {text!r}"
        )
    return int(text)


async def handle(args: argparse.Namespace) -> int:
    if args.nats_url and args.nats_memory_limit:
        raise ConflictingOptions(
            "--nats-memory-limit applies to the embedded nats-server; with --nats-url the "
            "NATS cluster is yours to configure (set GOMEMLIMIT in its nodes' environment)"
        )
    if not args.nats_url and (args.standby or args.lease_ttl != HUB_LEASE_TTL_S):
        raise ConflictingOptions(
            f"{'--standby' if args.standby else '--lease-ttl'} needs --nats-url: a hub on its "
            "embedded nats-server is kept alone by its data dir's lock and has no lease; a "
            "standby hub runs on a NATS cluster (`fleetbus up --nats-url URL[,URL...] "
            "--standby`)"
        )
    if args.from_data_dir is not None and not args.nats_url:
        raise ConflictingOptions(
            "--from-data-dir needs --nats-url: only a hub on a NATS cluster takes the rest "
            "of its data dir from JetStream"
        )
    if args.events_retain is not None and args.scheduler and args.snapshot_every == 0:
        raise ConflictingOptions(
            "--events-retain: events leave the live log only once a snapshot covers them, "
            "and --snapshot-every 0 takes none; give --snapshot-every N"
        )
    if args.sim_processes is not None:
        sim_processes_for(args.sim_clusters, args.sim_processes)
    if args.tls_cert is not None or args.tls_key is not None:
        # The operator's certificate and key are checked before anything starts.
        api_tls(
            cert=args.tls_cert,
            key=args.tls_key,
            issue=args.tls_issue,
            pki=HubPki(args.data_dir / "pki"),
            hosts=[],
            now=datetime.now(UTC),
        )
    oidc = load_oidc_config(args.oidc_config) if args.oidc_config else None
    if args.from_data_dir is not None:
        # Last: nothing is copied for a command refused for its other options.
        copied = prepare_replica_dir(DataDir(args.from_data_dir), DataDir(args.data_dir))
        print(f"copied {', '.join(copied)} from {args.from_data_dir} into {args.data_dir}")
    if args.standby:
        missing = missing_replica_files(DataDir(args.data_dir))
        if missing:
            raise HubNotFound(
                f"{args.data_dir} lacks {', '.join(missing)}: a standby logs in to the hub's "
                "NATS with the hub's credentials and opens its secrets with its keyring; "
                "prepare it with `fleetbus up --standby --data-dir "
                f"{args.data_dir} --from-data-dir HUB_DATA_DIR ...` (or copy those files)"
            )
    configure_logging(args.log_format)
    host, port = args.http
    await run_hub(
        HubOptions(
            data_dir=args.data_dir,
            http_host=host,
            http_port=port,
            nats_port=args.nats_port,
            leaf_port=args.leaf_port,
            sim_clusters=args.sim_clusters,
            scheduler=args.scheduler,
            snapshot_every=args.snapshot_every,
            snapshot_keep=args.snapshot_keep,
            events_retention=args.events_retain,
            events_archive_every_s=args.events_archive_every,
            sim_processes=args.sim_processes,
            leaf_host=args.leaf_host,
            leaf_ws_port=args.leaf_ws_port,
            public_host=args.public_host,
            nats_urls=args.nats_url,
            replicas=args.replicas,
            nats_memory_limit=args.nats_memory_limit or "",
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_issue=args.tls_issue,
            source_hosts=tuple(args.source_host),
            source_timeout_s=args.source_timeout,
            oidc=oidc,
            standby=args.standby,
            lease_ttl_s=args.lease_ttl,
        )
    )
    return 0
