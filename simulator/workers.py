"""Simulated clusters in worker processes, as the hub sees them: `fleetbus up --sim-processes K`.

One Python process cannot run 10,000 connectors: every cluster is a NATS connection with a
pull loop, and one event loop on one core becomes the bottleneck long before the hub does.
The hub therefore registers and provisions the whole simulated fleet itself, then hands
contiguous slices of it (sim-<first>..sim-<last>, `worker_slices`) to K child processes
(`fleetbus.simworker` is their entry point). `SimWorker` is one such process: spawned with the
hub secret on its stdin (never on the command line), ready once it prints `ready <n>`, stopped
by closing its stdin and SIGTERM (SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from simulator.errors import SimFleetFailed

log = logging.getLogger(__name__)

CONNECT_CONCURRENCY = 32
"""Connections one process opens at a time, so thousands of sims do not flood the hub."""
READY = b"ready"
STOP_GRACE_S = 15.0
"""How long a worker may take to close its connections before it is killed."""


class RunningEdge(Protocol):
    """A simulated cluster's running edge (the composition root's `EdgeRuntime`)."""

    async def stop(self) -> None: ...


Edge = TypeVar("Edge", bound=RunningEdge)


def sim_name(index: int) -> str:
    return f"sim-{index}"


def sim_index(name: str) -> int:
    """The number of simulated cluster `name` (`sim-<index>`)."""
    prefix, _, number = name.partition("-")
    if prefix != "sim" or not number.isdecimal():
        raise ValueError(f"not a simulated cluster's name: {name!r}")
    return int(number)


def hub_urls_for(index: int, urls: Sequence[str]) -> list[str]:
    """The hub URLs sim-`index` tries, in order: the clusters are spread over the hub's nodes
    (sim-1 on the first URL, sim-2 on the second, ..., round and round), and those of one
    node fail over to the others in turn (on three nodes, half of the first node's clusters
    go to the second and half to the third when it is lost), as a real edge given several
    hub URLs does. Deterministic: a hub started again spreads its fleet the same way."""
    if not urls:
        raise ValueError("a simulated cluster needs at least one hub URL")
    if index < 1:
        raise ValueError(f"simulated clusters are numbered from 1, not {index}")
    position = (index - 1) % len(urls)
    others = [*urls[position + 1 :], *urls[:position]]
    if others:
        turn = ((index - 1) // len(urls)) % len(others)
        others = [*others[turn:], *others[:turn]]
    return [urls[position], *others]


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
    start: Callable[[str], Awaitable[Edge]],
    *,
    limit: int = CONNECT_CONCURRENCY,
) -> list[Edge]:
    """Start an edge per name with at most `limit` starting at once; all or none.

    If any fails, those that started are stopped again and the first failure is raised."""
    gate = asyncio.Semaphore(limit)

    async def one(name: str) -> Edge:
        async with gate:
            return await start(name)

    results = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
    edges = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(edge.stop() for edge in edges), return_exceptions=True)
        raise failures[0]
    return edges


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
        command: Sequence[str],
        hub_urls: Sequence[str],
        hub_secret: str,
        inventory_interval: float,
    ) -> SimWorker:
        process = await asyncio.create_subprocess_exec(
            *command,
            *(option for url in hub_urls for option in ("--hub-url", url)),
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
                raise SimFleetFailed(f"{self.label} exited with code {code} before it was ready")
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
