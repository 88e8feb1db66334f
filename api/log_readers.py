"""Reading the log from request handlers and background tasks without leaving readers behind.

A reader of the event store holds a JetStream consumer until it is closed. Handlers often stop
early (a full page, a client gone, the hub stopping), so readers are closed explicitly; the
tasks pumping them are stopped with `events.tasks.cancel_and_wait`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from events.store import StoredEvent


def closing(
    events: AsyncIterator[StoredEvent],
) -> contextlib.aclosing[AsyncGenerator[StoredEvent]]:
    """A store reader that is closed (its consumer deleted) as soon as the caller stops early."""
    assert isinstance(events, AsyncGenerator)
    return contextlib.aclosing(events)
