"""What every fault suite needs: writer processes, polling with a deadline, exactly-once checks.

Faults are real (signals to real processes, servers stopped and started) and seeded: a suite
draws every choice (when to kill, what, for how long) from `random.Random(seed)`, and the seed is
in the test id, so a failing run is repeated by running that id again.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from events.store import EventStore
from tests.eventually import eventually

REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Ack:
    event_id: str
    seq: int


@dataclass
class WriterFleet:
    """Writer processes (`tests.faults.append_writer`) appending to the log at the same time."""

    urls: Sequence[str]
    credentials: Path
    directory: Path
    seed: int
    counts: Sequence[int]
    timeout: float = 2.0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ack_file(self, writer: int) -> Path:
        return self.directory / f"acks-{writer}.txt"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for writer, count in enumerate(self.counts):
            log = (self.directory / f"writer-{writer}.log").open("wb")
            try:
                self.processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "tests.faults.append_writer",
                            "--urls",
                            ",".join(self.urls),
                            f"--creds={self.credentials}",
                            "--writer",
                            str(writer),
                            "--count",
                            str(count),
                            "--seed",
                            str(self.seed),
                            "--acks",
                            str(self.ack_file(writer)),
                            "--timeout",
                            str(self.timeout),
                        ],
                        cwd=REPO,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            finally:
                log.close()

    @property
    def total(self) -> int:
        return sum(self.counts)

    def acknowledged(self) -> int:
        """Events acknowledged so far, over all writers (complete lines only)."""
        count = 0
        for writer in range(len(self.counts)):
            with contextlib.suppress(FileNotFoundError):
                count += self.ack_file(writer).read_bytes().count(b"\n")
        return count

    def acks(self, writer: int) -> list[Ack]:
        lines = self.ack_file(writer).read_text().splitlines()
        return [Ack(event_id, int(seq)) for event_id, seq in (line.split() for line in lines)]

    def retried_commands(self) -> int:
        """Commands the writers had to retry (no answer in time), from their final lines."""
        total = 0
        for writer in range(len(self.processes)):
            text = (self.directory / f"writer-{writer}.log").read_text(errors="replace")
            match = re.search(r"(\d+) commands retried", text)
            total += int(match.group(1)) if match else 0
        return total

    def finished(self) -> bool:
        return all(process.poll() is not None for process in self.processes)

    def report(self) -> str:
        return " | ".join(
            (self.directory / f"writer-{writer}.log").read_text(errors="replace").strip()
            for writer in range(len(self.processes))
        )

    async def wait(self, within: float) -> None:
        await eventually(self.finished, f"writers finishing ({self.report()})", within, 0.1)
        codes = [process.returncode for process in self.processes]
        assert codes == [0] * len(codes), f"writer exit codes {codes}: {self.report()}"

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def read_log(store: EventStore) -> list[tuple[int, str]]:
    """(sequence, event id) of every event the stream holds, in order."""
    return [(stored.seq, stored.event.id) async for stored in store.read()]


def check_exactly_once(fleet: WriterFleet, log: list[tuple[int, str]]) -> None:
    """Every acknowledged event is in the log once, at its acknowledged sequence, in the
    order its writer appended it; nothing in the log is there twice."""
    occurrences = collections.Counter(event_id for _, event_id in log)
    twice = {event_id: n for event_id, n in occurrences.items() if n > 1}
    assert not twice, f"{len(twice)} events stored more than once: {list(twice)[:5]}"
    seq_of = {event_id: seq for seq, event_id in log}
    for writer in range(len(fleet.counts)):
        acks = fleet.acks(writer)
        assert len(acks) == fleet.counts[writer], (
            f"writer {writer} acknowledged {len(acks)} of {fleet.counts[writer]} events"
        )
        missing = [ack for ack in acks if ack.event_id not in seq_of]
        assert not missing, (
            f"writer {writer}: {len(missing)} acknowledged events lost: {missing[:5]}"
        )
        moved = [ack for ack in acks if seq_of[ack.event_id] != ack.seq]
        assert not moved, (
            f"writer {writer}: acknowledged at one sequence, stored at another: {moved[:5]}"
        )
        order = [ack.seq for ack in acks]
        assert order == sorted(order), f"writer {writer}: its events are out of order in the log"


def record_figures(suite: str, **figures: object) -> None:
    """Print a suite's measured figures; with `FLEETBUS_RELIABILITY_LOG` set, also append them
    as one JSON line to that file (RELIABILITY.md is filled from such runs)."""
    line = json.dumps({"suite": suite, **figures}, sort_keys=True)
    print(f"reliability figures: {line}", flush=True)
    target = os.environ.get("FLEETBUS_RELIABILITY_LOG")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


LONG = (pytest.mark.long, pytest.mark.timeout(3600))
"""Marks of a long variant: run by `make test-long`, with room beyond the default timeout."""
