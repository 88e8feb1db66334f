"""Where the time of a slow figure goes: the top functions of a cProfile run, as report lines.

A figure that misses its target profiles the work it timed and puts the result in the report,
so BENCHMARKS.md says what bounds a number measured on this commit, not what bounded an older
one.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


def profiled(work: Callable[[], T], top: int = 3) -> tuple[T, float, list[str]]:
    """Run `work` under cProfile: its result, total profiled seconds, and the top functions."""
    profile = cProfile.Profile()
    result = profile.runcall(work)
    stats = pstats.Stats(profile)
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    rows = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2],
        reverse=True,
    )
    lines = []
    for (filename, line, function), (_, _, own, _, _) in rows[:top]:
        where = Path(filename)
        shown = str(where.relative_to(REPO)) if where.is_relative_to(REPO) else where.name
        lines.append(f"`{shown}:{line}` (`{function}`): {own:.2f} s of {total:.2f} s")
    return result, total, lines
