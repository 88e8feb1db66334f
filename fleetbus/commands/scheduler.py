"""`fleetbus scheduler`: run the scheduler on its own, next to (or instead of) the hub's.

`fleetbus up` runs a scheduler itself; this command runs another one against the same hub,
for a separate process or host. Only the holder of the lease decides; the others wait.

It is a hub service, not a client: it speaks NATS as the hub's own user, with the credentials
from the hub's data dir (on another host: a copy of its `creds/hub.creds` and `keys/`, and
`--nats-url`), not through the HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from charts.store import ChartStore
from events.sealed import EventSealer
from events.store import EventStore, connect
from events.streams import REPORTS_STREAM
from fleetbus.datadir import DEFAULT_DATA_DIR, DataDir
from fleetbus.jsonlog import add_log_format_option, configure_logging
from fleetbus.options import nats_urls, whole_number
from fleetbus.renderer import ChartArchiveRenderer
from scheduler.service import SchedulerService
from scheduler.snapshot_store import SNAPSHOT_EVERY, SNAPSHOT_KEEP


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scheduler",
        help="run a scheduler against a running hub (a hub service: needs the hub's data dir)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="D",
        help="the hub's data dir: its NATS address and the hub's credentials (creds/hub.creds)",
    )
    parser.add_argument(
        "--nats-url",
        type=nats_urls,
        default=None,
        metavar="URL[,URL...]",
        help="the hub's NATS: one URL, or every node's of a cluster, separated by commas "
        "(default: from the data dir)",
    )
    parser.add_argument("--holder", default=None, help="name this scheduler holds the lease as")
    parser.add_argument(
        "--lease-ttl",
        type=whole_number(1, 3600),
        default=15,
        metavar="SECONDS",
        help="how long the lease outlives a scheduler that died without releasing it",
    )
    add_log_format_option(parser)
    parser.add_argument(
        "--snapshot-every",
        type=whole_number(0),
        default=SNAPSHOT_EVERY,
        metavar="N",
        help="while leading, snapshot the fold of the log every N events "
        f"(default {SNAPSHOT_EVERY:,}; 0: never)",
    )
    parser.add_argument(
        "--snapshot-keep",
        type=whole_number(1),
        default=SNAPSHOT_KEEP,
        metavar="K",
        help=f"keep the K newest snapshots (default {SNAPSHOT_KEEP})",
    )
    parser.set_defaults(handler=handle)


def hub_nats_urls(info: dict[str, Any]) -> list[str]:
    """Every NATS URL a running hub's `hub.json` names (all nodes of a cluster)."""
    return [str(url) for url in info.get("nats_urls") or [info["nats_url"]]]


async def handle(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    data = DataDir(args.data_dir)
    urls = list(args.nats_url or hub_nats_urls(data.read_hub_info()))
    nc = await connect(urls, name="fleetbus-scheduler", credentials=data.existing_hub_credentials())
    store = EventStore(nc, sealer=EventSealer(data.keyring()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        service = SchedulerService(
            store,
            EventStore(nc, stream=REPORTS_STREAM),
            ChartArchiveRenderer(ChartStore.beside(store)),
            holder=args.holder,
            lease_ttl_s=args.lease_ttl,
            snapshot_every=args.snapshot_every,
            snapshot_keep=args.snapshot_keep,
        )
        await service.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await store.close()
    return 0
