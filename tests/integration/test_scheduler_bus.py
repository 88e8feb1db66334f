"""The scheduler's pipelined DESIRED writes on a real nats-server: every one stored, once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator

import nats.js.errors
import orjson
import pytest

from events.errors import EventLogUnavailable
from events.store import EventStore
from events.streams import DESIRED_STREAM, EVENTS_STREAM
from scheduler.bus import LEASE_SUBJECT, SchedulerBus
from scheduler.decide import DesiredWrite
from scheduler.errors import LeaseLost
from taskset.digest import digest_of
from taskset.model import ClusterTask
from tests.conftest import HubNats
from tests.eventually import eventually, eventually_value
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


@contextlib.contextmanager
def stalled(hub_nats: HubNats) -> Iterator[None]:
    """The hub's nats-server frozen (SIGSTOP) until the block ends: it reads and answers
    nothing meanwhile, then everything it was sent."""
    os.kill(hub_nats.server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(hub_nats.server.pid, signal.SIGCONT)


async def test_writes_a_stalled_server_answers_late_are_stored_once_without_an_error(
    event_store: EventStore, hub_nats: HubNats, caplog: pytest.LogCaptureFixture
) -> None:
    # Answers awaited 0.5 s: a stall of 6 s is more than every retry of one request.
    bus = SchedulerBus(event_store, timeout=0.5, patience=60.0)
    writes = [write_for(f"c-{i}", generation=2) for i in range(40)]
    with stalled(hub_nats):
        writing = asyncio.create_task(bus.write_desired_many(writes, window=16))
        await asyncio.sleep(6.0)
        assert not writing.done()
    await asyncio.wait_for(writing, timeout=90.0)

    assert await bus.stored_generations() == {write.subject: 2 for write in writes}
    state = (await event_store.stream_info(DESIRED_STREAM))["state"]
    assert state["messages"] == 40
    assert state["last_seq"] == 40, "a write sent again was stored a second time"
    assert "DESIRED is slow to answer" in caplog.text


async def test_writes_never_answered_end_after_the_patience(
    event_store: EventStore, hub_nats: HubNats
) -> None:
    bus = SchedulerBus(event_store, timeout=0.3, patience=2.0)
    with stalled(hub_nats), pytest.raises(EventLogUnavailable, match=r"within 2 s"):
        await bus.write_desired_many([write_for("c-1", generation=1)])


async def test_a_lease_renewal_whose_answer_was_lost_is_still_held(
    event_store: EventStore,
) -> None:
    bus = SchedulerBus(event_store)
    await bus.ensure_lease_stream()
    first = await bus.write_lease("me", 0, ttl_s=30)
    # A renewal stored whose answer never came back (what a retry after a slow answer
    # meets): the same message, published without waiting for an answer.
    await event_store.nc.publish(
        LEASE_SUBJECT,
        orjson.dumps({"holder": "me"}),
        headers={"Nats-Expected-Last-Subject-Sequence": str(first), "Nats-TTL": "30s"},
    )
    await eventually_value(
        lambda: _lease_seq(bus), "the renewal stored", accept=lambda seq: seq > first
    )
    renewed = await bus.write_lease("me", first, ttl_s=30)  # the retry: "wrong last sequence"
    assert renewed > first
    assert await bus.lease_holder() == (renewed, "me")


async def _lease_seq(bus: SchedulerBus) -> int:
    return (await bus.lease_holder())[0]


async def test_a_lease_written_by_another_holder_is_still_lost(event_store: EventStore) -> None:
    bus = SchedulerBus(event_store)
    await bus.ensure_lease_stream()
    first = await bus.write_lease("me", 0, ttl_s=30)
    await bus.write_lease("other", first, ttl_s=30)
    with pytest.raises(LeaseLost):
        await bus.write_lease("me", first, ttl_s=30)
