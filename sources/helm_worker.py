"""The Helm worker: one network step of a chart fetch, in a child process of its own.

`python -m sources.helm_worker` reads one `WorkerRequest` (JSON) on its standard input, runs it
through Helm's client (`sources.helm_pull`) and writes one JSON answer on its standard output:
`{"result": {...}}` or `{"error": {"type": ..., "message": ...}}`. Credentials travel on the
pipe only, never on the command line or in the environment.

It is a process so that it can be stopped: the hub kills it (and its process group) when the
fetch's time limit passes or the fetch is cancelled (`sources.processes`). It also stops itself
at the size limit, while downloading: a watchdog thread reads the bytes the process has read so
far (`rchar` in `/proc/self/io`, which counts every `read` on a socket as Helm's Go client does
them) every `POLL_S`, and ends the process with `SourceTooLarge` as soon as a step goes over
its budget, so a chart over the limit is never downloaded whole.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

from sources.credentials import Credential
from sources.errors import SourceError

POLL_S = 0.002
READ_SLACK_BYTES = 1024 * 1024
"""What a step may read besides what it downloads: TLS roots, resolver files, Helm's caches."""


class WorkerRequest(msgspec.Struct, frozen=True, kw_only=True):
    step: Literal["pull", "dependencies"]
    kind: str = ""
    url: str = ""
    chart: str = ""
    version: str = ""
    plain_http: bool = False
    directory: str = ""
    """`pull`: where the archive goes; `dependencies`: the chart whose `charts/` to fill."""
    workdir: str = ""
    allowed: list[tuple[str, int | None]] = []
    credential: Credential | None = None
    max_bytes: int = 0
    """The size limit of what one step downloads."""


class WorkerError(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    message: str


class WorkerAnswer(msgspec.Struct, frozen=True, kw_only=True):
    result: dict[str, Any] | None = None
    error: WorkerError | None = None


def bytes_read() -> int | None:
    """What this process has read so far (all `read` calls, sockets included); None off Linux."""
    try:
        with open("/proc/self/io", "rb") as io:
            for line in io:
                if line.startswith(b"rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class ReadBudget:
    """Ends the process with `SourceTooLarge` once a step has read more than its budget."""

    def __init__(self, answer: AnswerChannel) -> None:
        self.answer = answer
        self._lock = threading.Lock()
        self._start = bytes_read()
        self._budget = 0
        self._what = ""
        self._limit_text = ""

    def limit(self, what: str, budget: int, limit_text: str) -> None:
        """From now on, `what` may read `budget` bytes; the message names `limit_text`."""
        with self._lock:
            self._start = bytes_read()
            self._budget = budget
            self._what = what
            self._limit_text = limit_text

    def used(self) -> int:
        now = bytes_read()
        with self._lock:
            start = self._start
        return 0 if now is None or start is None else now - start

    def watch(self) -> None:
        if self._start is None:
            return
        threading.Thread(target=self._watch, name="read-budget", daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(POLL_S)
            now = bytes_read()
            with self._lock:
                if not self._budget or now is None or self._start is None:
                    continue
                over = now - self._start > self._budget
                what, limit_text = self._what, self._limit_text
            if over:
                self.answer.send(
                    WorkerAnswer(
                        error=WorkerError(
                            type="SourceTooLarge",
                            message=f"{what} was stopped while downloading: it is over the "
                            f"limit of {limit_text}",
                        )
                    ),
                    exit_now=True,
                )


class AnswerChannel:
    """The one answer of the worker, on a private copy of its standard output (Helm's own
    output, if any, goes to standard error)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._sent = False

    def send(self, answer: WorkerAnswer, *, exit_now: bool = False) -> None:
        with self._lock:
            if not self._sent:
                self._sent = True
                self.out.write(msgspec.json.encode(answer) + b"\n")
                self.out.flush()
            if exit_now:
                os._exit(0)


def run(request: WorkerRequest, budget: ReadBudget) -> dict[str, Any]:
    from sources import helm_pull

    if request.step == "pull":
        return helm_pull.pull_archive(request, budget)
    helm_pull.build_dependencies(request, budget)
    return {}


def main() -> int:
    answers = AnswerChannel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    try:
        request = msgspec.json.decode(sys.stdin.buffer.read(), type=WorkerRequest)
    except msgspec.DecodeError as e:
        answers.send(WorkerAnswer(error=WorkerError(type="SourceError", message=str(e))))
        return 2
    os.chdir(request.workdir or Path.cwd())
    budget = ReadBudget(answers)
    budget.watch()
    try:
        result = run(request, budget)
    except SourceError as e:
        answers.send(WorkerAnswer(error=WorkerError(type=type(e).__name__, message=str(e))))
        return 0
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        answers.send(
            WorkerAnswer(
                error=WorkerError(
                    type="SourceUnreachable",
                    message=f"the fetch's directory cannot be written{where}: {e.strerror or e}",
                )
            )
        )
        return 0
    answers.send(WorkerAnswer(result=result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
