"""Stopping tasks that talk to NATS.

nats-py swallows a `CancelledError` that reaches a task while the client flushes a command to
the server (`Client._flush_pending` catches it and returns), so a task cancelled at that moment
carries on as if nothing happened: a follower goes on to wait for the next event, and whoever
awaits it after `cancel()` waits forever. Every publish, subscribe and request passes through
that flush, so any task using the connection can be hit. `cancel_and_wait` cancels again those
that go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_EVERY_S = 0.5


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], *, every_s: float = RECANCEL_EVERY_S
) -> list[Any]:
    """Cancel `tasks` and wait until each has ended, cancelling again those still running.

    Returns what each ended with, in order, as `asyncio.gather(..., return_exceptions=True)`
    does: its result, its exception, or the `CancelledError` it stopped with. A task is
    cancelled again only after `every_s` without ending, so one that handles its cancellation
    by cleaning up gets that long before it is interrupted.

    If the caller is cancelled meanwhile (a task stopping its helpers from a `finally` is
    itself cancelled again), the helpers are still stopped before that cancellation goes on:
    otherwise they would be left running behind a task that has ended.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    interrupted: asyncio.CancelledError | None = None
    while pending:
        for task in pending:
            task.cancel()
        try:
            await asyncio.wait(pending, timeout=every_s)
        except asyncio.CancelledError as cancelled:
            interrupted = cancelled
        pending = {task for task in pending if not task.done()}
    outcomes = [_outcome(task) for task in tasks]
    if interrupted is not None:
        raise interrupted
    return outcomes


def _outcome(task: asyncio.Future[Any]) -> Any:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()
