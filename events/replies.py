"""Many requests in flight on one subscription: the reply multiplexer of pipelined writers.

`EventStore.append_many` and the scheduler's DESIRED writes publish thousands of requests back
to back; a request-reply round trip (and a task) each would cap them at a few thousand a
second. `PendingReplies` subscribes once on `<inbox>.*` and resolves one future per reply.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.errors import EventLogUnavailable


class PendingReplies:
    """Answers to many requests published back to back, each awaited through its own future.

    One subscription on `<inbox>.*` serves them all, so a pipeline of requests costs one
    publish each instead of a request-reply round trip (and a task) each. Use it as an async
    context manager around the publishes; `expect(key)` gives the reply subject to publish with
    and the future its answer resolves."""

    def __init__(self, nc: NatsClient, purpose: str) -> None:
        self.nc = nc
        self.purpose = purpose
        self.prefix = nc.new_inbox()
        self._futures: dict[str, asyncio.Future[Msg]] = {}
        self._sub: Subscription | None = None

    async def __aenter__(self) -> PendingReplies:
        async def answer(msg: Msg) -> None:
            future = self._futures.pop(msg.subject, None)
            if future is not None and not future.done():
                future.set_result(msg)

        try:
            self._sub = await self.nc.subscribe(
                f"{self.prefix}.*", cb=answer, pending_msgs_limit=0, pending_bytes_limit=0
            )
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot {self.purpose}: {e}") from e
        return self

    async def __aexit__(self, *_: object) -> None:
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()

    def expect(self, key: int) -> tuple[str, asyncio.Future[Msg]]:
        reply = f"{self.prefix}.{key}"
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._futures[reply] = future
        return reply, future

    def forget(self, key: int) -> None:
        """Stop waiting for `key` (its answer did not come in time)."""
        future = self._futures.pop(f"{self.prefix}.{key}", None)
        if future is not None:
            future.cancel()
