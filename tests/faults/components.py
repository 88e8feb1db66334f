"""fleetbus components as real processes, for killing with SIGKILL and starting again.

Each `Component` is one command line (a `fleetbus` subcommand, or the projector runner) with its
own log file. `kill9` is `kill -9` of that process alone: children it started in their own
session (an edge's leaf nats-server) live on, as they would when only the connector container
of an edge crashes. `nats_servers_under` finds such servers, so a test can check on them and
clean up after itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.harness import REPO
from tests.processes import nats_servers_under


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        assert not self.running(), f"{self.name} is already running"
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [sys.executable, *self.argv],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        assert self.process is not None, f"{self.name} was never started"
        assert self.running(), f"{self.name} is not running"
        self.process.kill()
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; records the exit code of a process that ended by itself."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def died_by_itself(self) -> int | None:
        """The exit code if the process ended without being killed or stopped."""
        if self.process is None:
            return None
        return self.process.poll()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def kill_nats_servers_under(directory: Path) -> None:
    for pid in nats_servers_under(directory):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
