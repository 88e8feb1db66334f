"""The hub as users run it, in child processes: `fleetbus up` (with its nats-server) and
`fleetbus scheduler`, on free loopback ports in a temporary data dir.

Benchmarks that measure the whole loop or the hub's footprint start these instead of calling
services in-process, so memory and CPU are the hub's own and the simulated fleet of
`fleetbus up --sim-clusters N` runs exactly as a user would run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import children_of, rss_mib
from events.store import EventStore, connect
from events.streams import REPORTS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.natsserver import free_port

REPO = Path(__file__).resolve().parent.parent


class HubFailed(RuntimeError):
    """A hub process exited or never came up; carries the tail of its output."""


KEEP_LOGS_ENV = "FLEETBUS_BENCH_LOGS"
"""A directory to copy a run's process logs into before its temporary data dir goes."""


def keep_logs(root: Path) -> None:
    """Copy the `*.log` files of a run under `root` into `$FLEETBUS_BENCH_LOGS/<root name>/`."""
    target = os.environ.get(KEEP_LOGS_ENV)
    if not target:
        return
    into = Path(target) / root.name
    for log_file in root.rglob("*.log"):
        destination = into / log_file.relative_to(root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(log_file, destination)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(text[-lines:])

    def check(self) -> None:
        if self.process.poll() is not None:
            raise HubFailed(
                f"{self.name} exited with code {self.process.returncode}: {self.last_error()}"
            )

    def last_error(self) -> str:
        """Its last error, with the last place in this repository a traceback passed through."""
        return describe_failure(self.tail(200))

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, then SIGKILL; and its own children (a nats-server runs in a session of its
        own), so nothing it started outlives it even when it had to be killed."""
        if self.process.poll() is not None:
            return
        children = [(pid, _cmdline(pid)) for pid in children_of(self.process.pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        for pid, cmdline in children:
            if cmdline and _cmdline(pid) == cmdline:  # still that child, not a reused pid
                _stop_pid(pid)

    def tree_rss_mib(self) -> float:
        """RSS of the process and its direct children (a hub's nats-server)."""
        return self.rss_mib() + self.children_rss_mib()

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def children_rss_mib(self) -> float:
        return sum(rss_mib(pid) for pid in children_of(self.pid))


_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def describe_failure(output: str) -> str:
    """One line for a process's output: its last exception and where (in this repository)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    place = ""
    error = ""
    for line in lines:
        frame = _FRAME.search(line)
        if frame is not None:
            path = Path(frame["path"])
            if path.is_relative_to(REPO) and ".venv" not in path.parts:
                place = f"{path.relative_to(REPO)}:{frame['line']} ({frame['function']})"
        elif _EXCEPTION.match(line):
            error = line
    if not error:
        return (lines or ["(no output)"])[-1][:300]
    return (f"{error} at {place}" if place else error)[:300]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a leftover child by its pid: SIGTERM, then SIGKILL after `timeout`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def spawn(name: str, args: list[str], log: Path, trace_to: Path | None = None) -> Child:
    """`fleetbus ARGS` as a child in a session of its own; with `trace_to`, under tracemalloc
    (`bench.traced`: SIGUSR2 writes a snapshot there)."""
    output = log.open("wb")
    command = ["-m", "fleetbus.cli"] if trace_to is None else ["-m", "bench.traced", str(trace_to)]
    try:
        process = subprocess.Popen(
            [sys.executable, *command, *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        output.close()
    return Child(name, process, log)


@dataclass
class RunningHub:
    root: Path
    data: DataDir
    hub: Child
    children: list[Child] = field(default_factory=list)
    ready_s: float = 0.0
    """Seconds from starting `fleetbus up` until it was ready (its hub.json written): with
    `--sim-clusters N`, every simulated cluster registered, provisioned and connected."""

    @property
    def nats_url(self) -> str:
        return str(self.data.read_hub_info()["nats_url"])

    async def store(self) -> EventStore:
        nc = await connect(
            self.nats_url,
            name="fleetbus-bench",
            credentials=self.data.hub_credentials,
        )
        return EventStore(nc)

    @staticmethod
    def reports(store: EventStore) -> EventStore:
        return store.on_stream(REPORTS_STREAM)

    def start_scheduler(self, trace_to: Path | None = None) -> Child:
        child = spawn(
            "fleetbus scheduler",
            ["scheduler", "--data-dir", str(self.data.root), "--holder", "bench-scheduler"],
            self.root / "scheduler.log",
            trace_to,
        )
        self.children.append(child)
        return child

    def check(self) -> None:
        for child in (self.hub, *self.children):
            child.check()


@contextlib.asynccontextmanager
async def running_hub(
    *,
    sim_clusters: int = 0,
    startup_timeout: float = 300.0,
    sim_processes: int | None = None,
    nats_memory_limit: str = "",
    trace_to: Path | None = None,
) -> AsyncIterator[RunningHub]:
    """`fleetbus up --no-scheduler` in a temporary data dir; stopped (and its children) on exit.
    Scheduling is `start_scheduler`'s process: one scheduler, on a core of its own.

    `sim_processes` is passed as `--sim-processes` (None: the hub's own choice by fleet size),
    `nats_memory_limit` as `--nats-memory-limit` (empty: none); with `trace_to`, the hub
    process runs under tracemalloc and writes a snapshot there on SIGUSR2."""
    with tempfile.TemporaryDirectory(prefix="fleetbus-bench-hub-") as tmp:
        root = Path(tmp)
        data = DataDir(root / "hub")
        args = [
            "up",
            "--data-dir",
            str(data.root),
            "--http",
            f"127.0.0.1:{free_port()}",
            "--nats-port",
            str(free_port()),
            "--leaf-port",
            str(free_port()),
            "--leaf-host",
            "127.0.0.1",
            "--sim-clusters",
            str(sim_clusters),
            # The hub's one scheduler is the `fleetbus scheduler` process each benchmark starts.
            "--no-scheduler",
        ]
        if sim_processes is not None:
            args += ["--sim-processes", str(sim_processes)]
        if nats_memory_limit:
            args += ["--nats-memory-limit", nats_memory_limit]
        hub = spawn("fleetbus up", args, root / "hub.log", trace_to)
        running = RunningHub(root=root, data=data, hub=hub)
        started = time.monotonic()
        try:
            deadline = started + startup_timeout
            while not data.hub_json.exists():
                hub.check()
                if time.monotonic() > deadline:
                    raise HubFailed(
                        f"fleetbus up not ready after {startup_timeout:.0f} s; its last output: "
                        + hub.last_error()
                    )
                await asyncio.sleep(0.2)
            running.ready_s = time.monotonic() - started
            yield running
        finally:
            for child in reversed(running.children):
                child.stop()
            hub.stop()
            keep_logs(root)
