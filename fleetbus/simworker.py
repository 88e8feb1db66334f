"""Simulated clusters in worker processes: `fleetbus up --sim-processes K`.

One Python process cannot run 10,000 connectors: every cluster is a NATS connection with a
pull loop, and one event loop on one core becomes the bottleneck long before the hub does.
`fleetbus up` therefore registers and provisions the whole simulated fleet itself, then hands
contiguous slices of it (sim-<first>..sim-<last>) to K child processes running this module.
Each worker connects its clusters to the hub's nats-server as plain clients, exactly like
in-process sims: per-cluster user, password derived from the hub secret
(`fleetbus.access.client_password`), in-memory `SimExecutor` behind the real connector.

The protocol between the hub and a worker is deliberately small:
- the hub secret arrives as the first line on stdin (never on the command line, never logged);
- the worker prints `ready <n>` on stdout once its n clusters are connected;
- the worker stops on SIGTERM/SIGINT, and on its own when stdin reaches EOF or its parent
  changes: the hub closing the pipe (or dying, even by SIGKILL) takes its workers with it.
Logs go to stderr, which the worker shares with the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from edge_connector.simulator import SimExecutor
from events.tasks import cancel_and_wait
from fleetbus.access import client_password
from fleetbus.bundle import EdgeSettings
from fleetbus.edge import EdgeRuntime
from fleetbus.errors import ServerFailed
from fleetbus.jsonlog import configure_json_logging
from taskset.errors import FleetbusError

log = logging.getLogger("fleetbus.simworker")

CONNECT_CONCURRENCY = 32
"""Connections one process opens at a time, so thousands of sims do not flood the hub."""
READY = b"ready"
PARENT_CHECK_S = 2.0
STOP_GRACE_S = 15.0
"""How long a worker may take to close its connections before it is killed."""


def sim_name(index: int) -> str:
    return f"sim-{index}"


def worker_slices(count: int, processes: int) -> list[tuple[int, int]]:
    """Split sim-1..sim-`count` into `processes` contiguous, near-equal (first, last) ranges."""
    if not 1 <= processes <= count:
        raise ValueError(f"cannot split {count} simulated clusters into {processes} processes")
    base, extra = divmod(count, processes)
    slices = []
    first = 1
    for index in range(processes):
        size = base + (1 if index < extra else 0)
        slices.append((first, first + size - 1))
        first += size
    return slices


async def start_bounded(
    names: Sequence[str],
    start: Callable[[str], Awaitable[EdgeRuntime]],
    *,
    limit: int = CONNECT_CONCURRENCY,
) -> list[EdgeRuntime]:
    """Start a runtime per name with at most `limit` starting at once; all or none.

    If any fails, those that started are stopped again and the first failure is raised."""
    gate = asyncio.Semaphore(limit)

    async def one(name: str) -> EdgeRuntime:
        async with gate:
            return await start(name)

    results = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
    runtimes = [r for r in results if isinstance(r, EdgeRuntime)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(runtime.stop() for runtime in runtimes), return_exceptions=True)
        raise failures[0]
    return runtimes


async def start_client_sim(
    name: str, hub_url: str, hub_secret: str, inventory_interval: float
) -> EdgeRuntime:
    """One simulated cluster connected to the hub as a plain client with its own credentials."""
    settings = EdgeSettings(
        cluster=name, hub_urls=["tls://unused:0"], inventory_interval=inventory_interval
    )
    return await EdgeRuntime.client(
        settings, hub_url, client_password(hub_secret, name), SimExecutor(name=name)
    )


# --- the hub's side ---------------------------------------------------------------------------


@dataclass
class SimWorker:
    """One worker process as the hub sees it."""

    first: int
    last: int
    process: asyncio.subprocess.Process
    stopping: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"sim worker {sim_name(self.first)}..{sim_name(self.last)} (pid {self.process.pid})"

    @classmethod
    async def spawn(
        cls,
        first: int,
        last: int,
        *,
        hub_url: str,
        hub_secret: str,
        inventory_interval: float,
    ) -> SimWorker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleetbus.simworker",
            "--hub-url",
            hub_url,
            "--first",
            str(first),
            "--last",
            str(last),
            "--inventory-interval",
            str(inventory_interval),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own session: a Ctrl-C on the terminal reaches the hub, which stops workers.
            start_new_session=True,
        )
        worker = cls(first=first, last=last, process=process)
        assert process.stdin is not None
        process.stdin.write(hub_secret.encode() + b"\n")
        await process.stdin.drain()
        return worker

    async def wait_ready(self) -> None:
        """Return once the worker reports its clusters connected; raise if it exits first."""
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                code = await self.process.wait()
                raise ServerFailed(f"{self.label} exited with code {code} before it was ready")
            if line.split()[:1] == [READY]:
                self.watcher = asyncio.create_task(self._watch(), name=f"watch-{self.label}")
                return

    async def _watch(self) -> None:
        code = await self.process.wait()
        if not self.stopping:
            log.error(
                "%s exited with code %s: its %d simulated clusters are offline",
                self.label,
                code,
                self.last - self.first + 1,
            )

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Close its stdin and SIGTERM it; SIGKILL it if it is still there after `grace`."""
        self.stopping = True
        if self.process.stdin is not None:
            self.process.stdin.close()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=grace)
            except TimeoutError:
                log.warning("%s did not stop within %.0f s; killing it", self.label, grace)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self.watcher is not None:
            await self.watcher


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
    started = time.monotonic()
    starting = asyncio.create_task(
        start_bounded(
            names,
            lambda name: start_client_sim(name, args.hub_url, secret, args.inventory_interval),
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
        log.info(
            "%d simulated clusters %s..%s connected in %.1f s",
            len(runtimes),
            names[0],
            names[-1],
            time.monotonic() - started,
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
    parser.add_argument("--hub-url", required=True, metavar="URL")
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
