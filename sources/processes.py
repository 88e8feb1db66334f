"""The time limit of one fetch, and the child processes that work for it.

Every network step of a fetch runs in a child process: `git` (and the `ssh` or
`git-remote-http` it starts) and the Helm worker (`sources.helm_worker`). A thread blocked in
Helm's client cannot be stopped, a process can: each child starts in its own process group, and
the whole group is killed when the fetch's time limit passes, when the fetch is cancelled (the
hub gave up waiting, or is shutting down), and after the child exits (so nothing it started
lingers). A fetch that was cancelled starts no further child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sources.errors import SourceTimedOut

POLL_S = 0.1
"""How often a running child is looked at (has it exited, leaving others in its group?)."""


class FetchDeadline:
    """The time left to one fetch; `cancel` kills whatever it is running now."""

    def __init__(self, timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._ends = clock() + timeout_s
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def remaining(self, what: str) -> float:
        """Seconds left; `SourceTimedOut` naming `what` when none are, or when cancelled."""
        left = self._ends - self._clock()
        if self._cancelled or left <= 0:
            raise SourceTimedOut(self._timed_out(what))
        return left

    def _timed_out(self, what: str) -> str:
        if self._cancelled and self._clock() < self._ends:
            return f"{what} was cancelled"
        return f"{what} took longer than {self.timeout_s:g}s"

    def cancel(self) -> None:
        """Stop the fetch: kill the children running now, start no other."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for process in running:
            _kill_group(process)

    def run(
        self,
        argv: list[str],
        *,
        what: str,
        input: bytes = b"",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` to its end within the time left, its whole process group killed after."""
        left = self.remaining(what)
        with self._lock:
            if self._cancelled:
                raise SourceTimedOut(self._timed_out(what))
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self._running.add(process)
        try:
            stdout, stderr = self._communicate(process, input, left, what)
            if self._cancelled:
                raise SourceTimedOut(self._timed_out(what))
        finally:
            with self._lock:
                self._running.discard(process)
            _kill_group(process)
            if process.poll() is None:
                process.kill()
                process.wait()
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    def _communicate(
        self, process: subprocess.Popen[bytes], input: bytes, left: float, what: str
    ) -> tuple[bytes, bytes]:
        """The child's output once it has exited. What it left running in its group (and
        holding its pipes open) is killed then, rather than waited for."""
        ends = self._clock() + left
        pending: bytes | None = input
        while True:
            try:
                return process.communicate(pending, timeout=min(POLL_S, max(left, 0.001)))
            except subprocess.TimeoutExpired:
                pending = None
                left = ends - self._clock()
                if process.poll() is not None:
                    _kill_group(process)
                elif left <= 0 or self._cancelled:
                    _kill_group(process)
                    process.communicate()
                    raise SourceTimedOut(self._timed_out(what)) from None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the child's process group (its own session): the child and what it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
