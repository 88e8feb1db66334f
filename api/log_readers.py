"""Reading the log from request handlers and background tasks without leaving readers behind.

A reader of the event store holds a JetStream consumer until it is closed. Handlers often stop
early (a full page, a client gone, the hub stopping), so readers are closed explicitly, and the
tasks pumping them are cancelled until they really end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from events.store import StoredEvent


def closing(
    events: AsyncIterator[StoredEvent],
) -> contextlib.aclosing[AsyncGenerator[StoredEvent]]:
    """A store reader that is closed (its consumer deleted) as soon as the caller stops early."""
    assert isinstance(events, AsyncGenerator)
    return contextlib.aclosing(events)


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], *, every_s: float = 0.5) -> None:
    """Cancel `tasks` and wait for them to end, cancelling again those that go on.

    nats-py swallows a `CancelledError` that arrives while it flushes a command, so a reader
    cancelled at that moment carries on as if nothing happened; a second cancel stops it.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
    await asyncio.gather(*tasks, return_exceptions=True)
