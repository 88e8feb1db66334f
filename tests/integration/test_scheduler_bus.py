"""The scheduler's pipelined DESIRED writes on a real nats-server: every one stored, once."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest

from events.store import EventStore
from events.streams import DESIRED_STREAM, EVENTS_STREAM
from scheduler.bus import SchedulerBus
from scheduler.decide import DesiredWrite
from taskset.digest import digest_of
from taskset.model import ClusterTask
from tests.eventually import eventually
from tests.integration.scheduler_harness import desired
from tests.scheduler_fixtures import make_taskset


def write_for(cluster: str, generation: int) -> DesiredWrite:
    taskset = make_taskset("web")
    return DesiredWrite(
        ClusterTask(
            cluster=cluster,
            taskset_name="web",
            version=generation,
            generation=generation,
            digest=digest_of(taskset),
            taskset=taskset,
        )
    )


async def test_more_writes_than_one_window_are_all_stored_with_their_headers(
    event_store: EventStore,
) -> None:
    bus = SchedulerBus(event_store)
    writes = [write_for(f"c-{i}", generation=3) for i in range(300)]
    await bus.write_desired_many(writes, window=64)

    generations = await bus.stored_generations()
    assert generations == {write.subject: 3 for write in writes}
    task = await desired(event_store, "c-299", "web")
    assert task is not None
    assert task.generation == 3


async def test_writing_the_same_generations_again_stores_nothing_new(
    event_store: EventStore,
) -> None:
    bus = SchedulerBus(event_store)
    writes = [write_for(f"c-{i}", generation=1) for i in range(40)]
    await bus.write_desired_many(writes, window=16)
    before = (await event_store.stream_info(DESIRED_STREAM))["state"]["last_seq"]
    await bus.write_desired_many(writes, window=16)
    after = (await event_store.stream_info(DESIRED_STREAM))["state"]["last_seq"]
    assert after == before


async def test_a_reader_cancelled_while_a_batch_is_on_its_way_ends_cancelled(
    event_store: EventStore,
) -> None:
    bus = SchedulerBus(event_store)
    stop = asyncio.Event()

    async def read() -> None:
        async for _ in bus.deliveries(EVENTS_STREAM, "test-reader", 1, stop):
            pass

    reader = asyncio.create_task(read())

    async def pull_waiting() -> bool:
        try:
            info = await event_store.nc.jetstream().consumer_info(EVENTS_STREAM, "test-reader")
        except nats.js.errors.NotFoundError:
            return False
        return int(info.num_waiting or 0) > 0

    await eventually(pull_waiting, what="the reader's pull request pending")
    reader.cancel()
    # The read in flight ends first; closing the reader does not fail in its place.
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_reading_the_stored_generations_leaves_no_consumer_on_desired(
    event_store: EventStore,
) -> None:
    """Only the clusters' durables are listed on DESIRED: the scan's consumer is gone once
    it has read (not only after its inactive threshold)."""
    bus = SchedulerBus(event_store)
    writes = [write_for(f"c-{i}", generation=1) for i in range(10)]
    await bus.write_desired_many(writes, window=16)

    assert len(await bus.stored_generations()) == len(writes)

    names = await event_store.api_request(f"CONSUMER.NAMES.{DESIRED_STREAM}", {})
    assert (names.get("consumers") or []) == []
