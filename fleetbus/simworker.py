"""The worker process of `fleetbus up --sim-processes K`: a slice of the simulated fleet.

One Python process cannot run 10,000 connectors: every cluster is a NATS connection with a
pull loop, and one event loop on one core becomes the bottleneck long before the hub does.
`fleetbus up` therefore registers and provisions the whole simulated fleet itself, then hands
contiguous slices of it (sim-<first>..sim-<last>) to K child processes running this module
(`simulator.workers.SimWorker` is the hub's side of one).
Each worker connects its clusters to the hub's nats-servers as plain clients, spread over
the hub's nodes (`simulator.workers.hub_urls_for`: sim-1 on the first, sim-2 on the second...,
each failing over to the others), exactly like
in-process sims: per-cluster user whose JWT the worker signs with the FLEET account's key
(`access.permissions.client_credentials`), in-memory `SimExecutor` behind the real connector.

The protocol between the hub and a worker is deliberately small:
- the hub secret (the FLEET account's seed) arrives as the first line on stdin (never on the
  command line, never logged);
- the worker prints `ready <n>` on stdout once its n clusters are connected;
- the worker stops on SIGTERM/SIGINT, and on its own when stdin reaches EOF or its parent
  changes: the hub closing the pipe (or dying, even by SIGKILL) takes its workers with it.
Logs go to stderr, which the worker shares with the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from access.nats_jwt import Nkey
from access.permissions import client_credentials
from events.tasks import cancel_and_wait
from fleetbus.bundle import EdgeSettings
from fleetbus.edge import EdgeRuntime
from fleetbus.jsonlog import configure_json_logging
from simulator.executor import SimExecutor
from simulator.heap import COLLECTOR_THRESHOLDS, settle_heap
from simulator.workers import READY, hub_urls_for, sim_index, sim_name, start_bounded
from taskset.errors import FleetbusError

log = logging.getLogger("fleetbus.simworker")

PARENT_CHECK_S = 2.0
WORKER_COMMAND = (sys.executable, "-m", "fleetbus.simworker")
"""How the hub starts a worker process."""


async def start_client_sim(
    name: str, hub_urls: Sequence[str], hub_secret: str, inventory_interval: float
) -> EdgeRuntime:
    """One simulated cluster connected to the hub as a plain client with its own credentials,
    to the first of `hub_urls` while it answers, then the next."""
    settings = EdgeSettings(
        cluster=name, hub_urls=["tls://unused:0"], inventory_interval=inventory_interval
    )
    credentials = client_credentials(Nkey(hub_secret), name, now=time.time())
    return await EdgeRuntime.client(settings, hub_urls, credentials, SimExecutor(name=name))


# --- the worker's side ------------------------------------------------------------------------


async def stdin_reader() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def parent_gone(parent: int) -> None:
    """Return when this process's parent has changed (it died and we were re-parented)."""
    while True:
        await asyncio.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            return


async def run_worker(args: argparse.Namespace) -> int:
    parent = os.getppid()
    stdin = await stdin_reader()
    secret = (await stdin.readline()).decode().strip()
    if not secret:
        log.error("no hub secret on stdin")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    names = [sim_name(index) for index in range(args.first, args.last + 1)]
    # Connecting thousands of clusters only adds long-lived objects: the collector's default
    # thresholds would walk them again and again while they are made (`simulator.heap`).
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    started = time.monotonic()
    starting = asyncio.create_task(
        start_bounded(
            names,
            lambda name: start_client_sim(
                name,
                hub_urls_for(sim_index(name), args.hub_url),
                secret,
                args.inventory_interval,
            ),
        )
    )
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not starting.done():
        # Stopped while connecting: exiting closes whatever connections were opened.
        await cancel_and_wait([starting])
        return 0
    runtimes = starting.result()
    try:
        settled = settle_heap()
        log.info(
            "%d simulated clusters %s..%s connected in %.1f s; %d objects frozen, "
            "collector thresholds %s",
            len(runtimes),
            names[0],
            names[-1],
            time.monotonic() - started,
            settled.frozen,
            settled.thresholds,
        )
        sys.stdout.buffer.write(READY + f" {len(runtimes)}\n".encode())
        sys.stdout.flush()
        waits = [
            asyncio.create_task(stop.wait(), name="signal"),
            asyncio.create_task(stdin.read(), name="stdin-eof"),
            asyncio.create_task(parent_gone(parent), name="parent"),
        ]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    finally:
        await asyncio.gather(*(runtime.stop() for runtime in runtimes), return_exceptions=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleetbus.simworker",
        description="Run a slice of `fleetbus up`'s simulated clusters (started by the hub; "
        "reads the hub secret from stdin).",
    )
    parser.add_argument(
        "--hub-url",
        action="append",
        required=True,
        metavar="URL",
        help="a client URL of the hub, one per node (repeat it); the clusters are spread over them",
    )
    parser.add_argument("--first", type=int, required=True, metavar="N")
    parser.add_argument("--last", type=int, required=True, metavar="N")
    parser.add_argument("--inventory-interval", type=float, default=30.0, metavar="S")
    args = parser.parse_args(argv)
    if not 1 <= args.first <= args.last:
        parser.error(f"expected 1 <= --first <= --last, got {args.first} and {args.last}")
    configure_json_logging()
    try:
        return asyncio.run(run_worker(args))
    except FleetbusError as e:
        log.error("simulated clusters sim-%d..sim-%d did not start: %s", args.first, args.last, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
