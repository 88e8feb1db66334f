"""`fleetbus publish --wait`: follow a rollout until every target cluster runs the version.

Polls the hub's fleet status (`GET /api/v1/status?taskset=N`) and draws a progress bar of
clusters converging: redrawn in place on a terminal, one line per change otherwise (logs, CI).
The wait ends with exit code 0 when the rollout is complete, and 1 when it halts (too many
clusters failed) or does not finish in time, saying why.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from fleetbus.client import HubClient
from fleetbus.errors import HubRequestFailed

BAR_WIDTH = 30
POLL_S = 1.0


@dataclass(frozen=True)
class Progress:
    state: str
    """`waiting` (nothing scheduled for this version yet), `progressing`, `halted`, `complete`."""
    applied: int = 0
    targets: int = 0
    wave: int = 0
    total_waves: int = 0
    failed: tuple[str, ...] = ()
    reason: str = ""


def progress_of(status: dict[str, Any], taskset: str, version: int) -> Progress:
    """Where the rollout of `taskset` v`version` stands, from a fleet status document."""
    for view in status.get("tasksets", []):
        rollout = view.get("rollout")
        if view.get("name") != taskset or not rollout or rollout["version"] < version:
            continue
        return Progress(
            state=str(rollout["state"]),
            applied=int(rollout["applied"]),
            targets=int(rollout["targets"]),
            wave=int(rollout["wave"]),
            total_waves=int(rollout["total_waves"]),
            failed=tuple(rollout.get("failed") or ()),
            reason=str(rollout.get("reason") or ""),
        )
    return Progress(state="waiting")


def bar(progress: Progress) -> str:
    if progress.state == "waiting":
        return f"[{'.' * BAR_WIDTH}] waiting for the scheduler"
    done = BAR_WIDTH * progress.applied // progress.targets if progress.targets else BAR_WIDTH
    failed = f", {len(progress.failed)} failed" if progress.failed else ""
    return (
        f"[{'#' * done}{'-' * (BAR_WIDTH - done)}] {progress.applied}/{progress.targets} "
        f"clusters, wave {progress.wave + 1}/{progress.total_waves}{failed} ({progress.state})"
    )


def wait_for_rollout(
    client: HubClient,
    taskset: str,
    version: int,
    *,
    timeout_s: float,
    out: TextIO | None = None,
) -> int:
    """Follow the rollout; 0 once complete, 1 if it halts or the time is up."""
    out = out or sys.stderr
    deadline = time.monotonic() + timeout_s
    interactive = out.isatty()
    shown = ""
    while True:
        try:
            status = client.get("/api/v1/status", {"taskset": taskset})
        except HubRequestFailed as e:
            # The read models trail the log by a moment: a taskset published a moment ago
            # may not be known to them yet. Anything else is an answer.
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)
            continue
        progress = progress_of(status, taskset, version)
        line = bar(progress)
        if line != shown:
            out.write(("\r\033[K" if interactive else "") + line + ("" if interactive else "\n"))
            out.flush()
            shown = line
        if progress.state == "complete":
            out.write("\n" if interactive else "")
            print(f"{taskset} v{version} runs on all {progress.targets} target clusters")
            return 0
        if progress.state == "halted":
            out.write("\n" if interactive else "")
            failed = ", ".join(progress.failed) or "none named"
            print(
                f"rollout of {taskset} v{version} halted at wave {progress.wave + 1}: "
                f"{progress.reason or 'too many clusters failed'} (failed: {failed}); "
                f"fix and publish again, or `fleetbus rollout resume {taskset}`",
                file=sys.stderr,
            )
            return 1
        if time.monotonic() > deadline:
            out.write("\n" if interactive else "")
            print(
                f"rollout of {taskset} v{version} not complete after {timeout_s:g}s "
                f"({progress.applied}/{progress.targets} applied); it goes on without us",
                file=sys.stderr,
            )
            return 1
        time.sleep(POLL_S)
