"""The one way tests wait for a condition: poll it with a deadline, never sleep a fixed time.

`eventually(check, what)` calls `check` (plain or async) until it is true and fails naming
`what` when `within` seconds pass first. The generous default deadline only costs time when
a test is failing anyway; on a loaded machine it keeps a passing test from looking flaky.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEFAULT_WITHIN_S = 60.0
DEFAULT_INTERVAL_S = 0.02


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    what: str = "condition",
    within: float = DEFAULT_WITHIN_S,
    interval: float = DEFAULT_INTERVAL_S,
) -> None:
    """Poll `check` until it is true; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
