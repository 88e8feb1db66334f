"""A continuous pull on a real nats-server: messages arrive as they are stored, never held back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from events.pull import ContinuousPull, PullSettings
from events.store import EventStore, connect
from events.tasks import cancel_and_wait
from tests.conftest import HubNats
from tests.eventually import eventually

STREAM = "PULLTEST"
DURABLE = "reader"


async def _stream_and_durable(store: EventStore) -> None:
    await store.ensure_stream(
        {"name": STREAM, "subjects": ["pulltest.>"], "storage": "memory", "num_replicas": 1}
    )
    await _create_durable(store)


async def _create_durable(store: EventStore) -> None:
    await store.api_request(
        f"CONSUMER.CREATE.{STREAM}.{DURABLE}",
        {
            "stream_name": STREAM,
            "config": {"durable_name": DURABLE, "ack_policy": "explicit", "ack_wait": 30 * 10**9},
            "action": "",
        },
    )


async def _publish(store: EventStore, *bodies: bytes) -> None:
    js = store.nc.jetstream()
    for body in bodies:
        await js.publish("pulltest.a", body)


class Reader:
    """Collects the bodies a pull hands over, and the sizes of the batches it handed."""

    def __init__(self, batches: AsyncGenerator[list[Msg], None]) -> None:
        self.bodies: list[bytes] = []
        self.batch_sizes: list[int] = []
        self._batches = batches
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for batch in self._batches:
            self.batch_sizes.append(len(batch))
            for msg in batch:
                self.bodies.append(msg.data)
                await msg.ack()

    async def until(self, count: int, *, within: float) -> float:
        """Seconds until `count` bodies were handed over; fails after `within`."""
        started = time.monotonic()
        await eventually(lambda: len(self.bodies) >= count, f"{count} messages", within=within)
        return time.monotonic() - started

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        await self._batches.aclose()


@contextlib.asynccontextmanager
async def reading(store: EventStore, settings: PullSettings) -> AsyncIterator[Reader]:
    pull = ContinuousPull(
        store.nc, api_prefix=store.api.prefix, stream=STREAM, durable=DURABLE, settings=settings
    )
    reader = Reader(pull.batches())
    try:
        yield reader
    finally:
        await reader.stop()


async def test_a_message_to_an_idle_consumer_arrives_long_before_its_request_expires(
    event_store: EventStore,
) -> None:
    await _stream_and_durable(event_store)
    # A batch of 100 and a request pending for ten minutes: holding the message until the
    # batch fills or the request expires would take 600 s.
    async with reading(event_store, PullSettings(batch=100, expires=600.0, heartbeat=5.0)) as r:
        await asyncio.sleep(0.3)  # the pull request is pending, nothing to deliver yet
        await _publish(event_store, b"one")
        await r.until(1, within=60.0)
        assert r.bodies == [b"one"]


async def test_a_backlog_comes_in_order_in_batches_no_larger_than_asked(
    event_store: EventStore,
) -> None:
    await _stream_and_durable(event_store)
    bodies = [f"m{i}".encode() for i in range(250)]
    await _publish(event_store, *bodies)
    async with reading(event_store, PullSettings(batch=40, expires=10.0, heartbeat=1.0)) as r:
        await r.until(250, within=60.0)
        assert r.bodies == bodies
        assert max(r.batch_sizes) <= 40
        assert len(r.batch_sizes) < 250, "a backlog is handed over in batches"


async def test_delivery_goes_on_after_many_requests_expired(event_store: EventStore) -> None:
    await _stream_and_durable(event_store)
    async with reading(event_store, PullSettings(batch=10, expires=0.5, heartbeat=0.2)) as r:
        await asyncio.sleep(2.0)  # four expired requests, each renewed
        await _publish(event_store, b"late")
        await r.until(1, within=60.0)
        assert r.bodies == [b"late"]


async def test_delivery_resumes_when_the_consumer_is_deleted_and_created_again(
    event_store: EventStore,
) -> None:
    await _stream_and_durable(event_store)
    async with reading(event_store, PullSettings(batch=10, expires=600.0, heartbeat=1.0)) as r:
        await _publish(event_store, b"before")
        await r.until(1, within=60.0)
        await event_store.api_request(f"CONSUMER.DELETE.{STREAM}.{DURABLE}")
        await _create_durable(event_store)
        await _publish(event_store, b"after")
        await r.until(2, within=60.0)
        assert r.bodies[-1] == b"after"


async def test_delivery_resumes_after_the_server_restarts(hub_nats: HubNats) -> None:
    nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    store = EventStore(nc)
    stream_config = {
        "name": STREAM,
        "subjects": ["pulltest.>"],
        "storage": "file",
        "num_replicas": 1,
    }
    try:
        await store.ensure_stream(stream_config)
        await _create_durable(store)
        async with reading(store, PullSettings(batch=10, expires=600.0, heartbeat=0.5)) as r:
            await _publish(store, b"before")
            await r.until(1, within=60.0)
            hub_nats.server.stop()
            hub_nats.server.start()
            # The request pending before the restart is gone with the server's memory.
            await _publish_when_back(store, b"after")
            await r.until(2, within=60.0)
            assert r.bodies == [b"before", b"after"]
    finally:
        await store.close()


async def _publish_when_back(store: EventStore, body: bytes) -> None:
    deadline = time.monotonic() + 60.0
    while True:
        try:
            await _publish(store, body)
            return
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_pull_sent_again_after_a_stall_leaves_one_request_pending(
    hub_nats: HubNats,
) -> None:
    """Heartbeats late because the server stalled: the request sent again replaces the old
    one instead of piling up beside it (each pending request sends heartbeats of its own)."""
    nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    store = EventStore(nc)
    try:
        await store.ensure_stream(
            {"name": STREAM, "subjects": ["pulltest.>"], "storage": "memory", "num_replicas": 1}
        )
        await _create_durable(store)
        async with reading(store, PullSettings(batch=10, expires=600.0, heartbeat=0.5)) as r:
            await eventually(lambda: _waiting(store, 1), "the first request pending", within=30.0)
            for _ in range(2):  # two stalls, each longer than the 2 s of silence allowed
                os.kill(hub_nats.server.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(3.0)
                finally:
                    os.kill(hub_nats.server.pid, signal.SIGCONT)
                await asyncio.sleep(1.0)
            await eventually(
                lambda: _waiting(store, 1), "one request pending after the stalls", within=30.0
            )
            await asyncio.sleep(2.0)  # and it stays one
            assert (await _consumer(store))["num_waiting"] == 1
            await _publish(store, b"after")
            await r.until(1, within=60.0)
            assert r.bodies == [b"after"]
    finally:
        await store.close()


async def _consumer(store: EventStore) -> dict[str, Any]:
    info: dict[str, Any] = await store.api_request(f"CONSUMER.INFO.{STREAM}.{DURABLE}")
    return info


async def _waiting(store: EventStore, count: int) -> bool:
    return int((await _consumer(store)).get("num_waiting", 0)) == count
