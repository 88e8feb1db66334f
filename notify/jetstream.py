"""The notification component's NATS adapter: one durable consumer per subscription and stream.

Each subscription reads EVENTS and REPORTS through its own durable pull consumers
(`notify-<name>-events`, `notify-<name>-reports`), created when the subscription is added with
deliver policy `new`: it gets what happens from then on, and because the consumers live in
JetStream, what happens while the hub is down is delivered when it is back. At most one message
is unacknowledged per consumer, so a receiver sees one stream's events in order; a failed
delivery is negatively acknowledged with a delay (the backoff), which holds the ones behind it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from events.catalog import Event
from events.errors import AppendRefused, UndecodableEvent
from events.pull import ContinuousPull, PullSettings
from events.store import EventStore

NANOS = 1_000_000_000
ACK_WAIT_S = 60.0
"""Longer than one delivery attempt may take (the HTTP timeout), so a slow receiver is not
handed the same event twice at once."""
CONSUMER_NOT_FOUND = "(code 10014)"


def durable_name(subscription: str, stream: str) -> str:
    return f"notify-{subscription}-{stream.lower()}"


@dataclass(frozen=True)
class Pulled:
    """One message of a subscription's consumer, decoded (None: not a valid event)."""

    event: Event | None
    seq: int
    deliveries: int
    """How often the server has delivered it (1 on the first attempt)."""
    msg: Msg

    async def ack(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.msg.ack()

    async def retry_in(self, seconds: float) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.msg.nak(delay=seconds)


async def consumer_info(store: EventStore, durable: str) -> dict[str, Any] | None:
    try:
        info = await store.api_request(f"CONSUMER.INFO.{store.stream}.{durable}")
    except AppendRefused as e:
        if CONSUMER_NOT_FOUND in str(e):
            return None
        raise
    return dict(info)


async def ensure_consumer(store: EventStore, durable: str) -> bool:
    """Create the durable (delivering from now on) unless it exists; whether it was created."""
    if await consumer_info(store, durable) is not None:
        return False
    config = {
        "durable_name": durable,
        "ack_policy": "explicit",
        "deliver_policy": "new",
        "ack_wait": int(ACK_WAIT_S * NANOS),
        "max_ack_pending": 1,
        "max_deliver": -1,
        "description": "fleetbus notification delivery",
    }
    await store.api_request(
        f"CONSUMER.CREATE.{store.stream}.{durable}",
        {"stream_name": store.stream, "config": config},
    )
    return True


async def delete_consumer(store: EventStore, durable: str) -> None:
    try:
        await store.api_request(f"CONSUMER.DELETE.{store.stream}.{durable}")
    except AppendRefused as e:
        if CONSUMER_NOT_FOUND not in str(e):
            raise


async def pulled(store: EventStore, durable: str) -> AsyncIterator[Pulled]:
    """The consumer's messages, one at a time, for as long as the caller iterates."""
    pull = ContinuousPull(
        store.nc,
        api_prefix=store.api.prefix,
        stream=store.stream,
        durable=durable,
        settings=PullSettings(batch=1, expires=30.0, heartbeat=5.0),
    )
    batches = pull.batches()
    try:
        async for batch in batches:
            for msg in batch:
                meta = msg.metadata
                try:
                    event: Event | None = store.decoder.decode(
                        msg.data, seq=meta.sequence.stream, subject=msg.subject
                    )
                except UndecodableEvent:
                    event = None
                yield Pulled(
                    event=event,
                    seq=meta.sequence.stream,
                    deliveries=meta.num_delivered,
                    msg=msg,
                )
    finally:
        await batches.aclose()
