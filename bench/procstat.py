"""Memory and CPU of a process, read from /proc: what P5 and P6 report.

RSS is `VmRSS` from /proc/<pid>/status (resident memory, shared pages included, as `ps` shows
it). CPU is utime+stime from /proc/<pid>/stat in clock ticks, sampled over a window; its share
of one core is ticks / (window * ticks per second). The parsers are pure so they can be tested
on recorded text.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_rss_kib(status_text: str) -> int:
    """`VmRSS` of a /proc/<pid>/status text, in KiB."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1])
    raise ValueError("no VmRSS line (is it a zombie or a kernel thread?)")


def parse_cpu_ticks(stat_text: str) -> int:
    """utime + stime of a /proc/<pid>/stat text (clock ticks).

    The command name (field 2) is in parentheses and may itself contain spaces and `)`, so
    fields are counted from the last `)`.
    """
    rest = stat_text[stat_text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime field 15.
    return int(rest[11]) + int(rest[12])


def rss_mib(pid: int) -> float:
    return parse_rss_kib(Path(f"/proc/{pid}/status").read_text()) / 1024.0


def cpu_ticks(pid: int) -> int:
    return parse_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())


def cpu_percent_of_core(ticks: int, seconds: float, ticks_per_second: int = CLOCK_TICKS) -> float:
    if seconds <= 0:
        raise ValueError("CPU share over an empty window")
    return 100.0 * ticks / ticks_per_second / seconds


def children_of(pid: int) -> list[int]:
    """Direct children of a process (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


@dataclass(frozen=True)
class IdleSample:
    rss_mib: float
    cpu_pct: float
    seconds: float


async def sample_idle(pid: int, seconds: float) -> IdleSample:
    """CPU share of one core used by `pid` over `seconds` of wall time, and its RSS at the end."""
    before = cpu_ticks(pid)
    start = time.monotonic()
    await asyncio.sleep(seconds)
    used = cpu_ticks(pid) - before
    elapsed = time.monotonic() - start
    return IdleSample(
        rss_mib=rss_mib(pid), cpu_pct=cpu_percent_of_core(used, elapsed), seconds=elapsed
    )
