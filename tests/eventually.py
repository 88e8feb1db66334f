"""The one way tests wait for a condition: poll it with a deadline, never sleep a fixed time.

- `eventually(check, what)` awaits until `check` (plain or async) is true;
- `eventually_value(read, what, accept)` awaits until what the async `read` returns is
  accepted (None never is), and returns it;
- `wait_until(check, what, accept)` is the same for blocking code (sync tests, threads).

Each fails naming `what` (and the last value seen) when `within` seconds pass first. The
generous default deadline only costs time when a test is failing anyway; on a loaded machine
it keeps a passing test from looking flaky.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_WITHIN_S = 60.0
DEFAULT_INTERVAL_S = 0.02


def truthy(value: object) -> bool:
    return bool(value)


def _timed_out(what: str, within: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {within:.0f}s waiting for {what}; last seen: {last!r}")


async def eventually_value(
    read: Callable[[], Awaitable[T | None]],
    what: str = "condition",
    accept: Callable[[T], bool] = truthy,
    within: float = DEFAULT_WITHIN_S,
    interval: float = DEFAULT_INTERVAL_S,
) -> T:
    """Await `read` until `accept` likes its answer, and return that answer."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if value is not None and accept(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, within, value)
        await asyncio.sleep(interval)


async def eventually(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]],
    what: str = "condition",
    within: float = DEFAULT_WITHIN_S,
    interval: float = DEFAULT_INTERVAL_S,
) -> None:
    """Poll `check` until it is true; fail naming `what` after `within` seconds."""

    async def read() -> bool:
        outcome = check()
        return outcome if isinstance(outcome, bool) else await outcome

    await eventually_value(read, what, within=within, interval=interval)


def wait_until(
    check: Callable[[], T | None],
    what: str = "condition",
    accept: Callable[[T], bool] = truthy,
    within: float = DEFAULT_WITHIN_S,
    interval: float = 0.1,
) -> T:
    """Call the blocking `check` until `accept` likes its answer, and return that answer."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value is not None and accept(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, within, value)
        time.sleep(interval)
