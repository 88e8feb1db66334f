"""Anti-entropy reads DESIRED for many clusters in one request, and decides as it did per cluster.

A real hub nats-server holds DESIRED for a fleet; the number of batched direct gets the hub
sends is counted by a subscriber on the JetStream API subject (core NATS delivers the requests
to it as well as to the server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.msg import Msg

from events.inventory import (
    InventoryDigest,
    TasksetState,
    desired_state_digest,
    encode_inventory,
)
from events.store import EventStore, connect
from events.streams import DESIRED_STREAM
from events.tasks import cancel_and_wait
from scheduler.antientropy import AntiEntropyService, DesiredReader
from tests.conftest import HubNats
from tests.eventually import eventually

STATE = TasksetState(generation=1, digest="d1")


@dataclass
class DirectGets:
    """The batched direct gets sent to DESIRED: one entry (its subject filters) per request."""

    requests: list[int] = field(default_factory=list)

    async def seen(self, msg: Msg) -> None:
        if msg.subject.endswith(f".DIRECT.GET.{DESIRED_STREAM}"):
            self.requests.append(msg.data.count(b"fleet.desired."))


@pytest.fixture
async def direct_gets(hub_nats: HubNats) -> AsyncIterator[DirectGets]:
    nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    gets = DirectGets()
    await nc.subscribe("$JS.API.DIRECT.GET.>", cb=gets.seen)
    await nc.subscribe("$JS.*.API.DIRECT.GET.>", cb=gets.seen)
    await nc.flush()
    try:
        yield gets
    finally:
        await nc.close()


async def write_fleet(store: EventStore, clusters: list[str], tasksets: int) -> None:
    js = store.nc.jetstream()
    for cluster in clusters:
        for n in range(tasksets):
            await js.publish_async(
                f"fleet.desired.{cluster}.app{n}",
                b"sealed",
                headers={
                    "Fleetbus-Generation": str(STATE.generation),
                    "Fleetbus-Digest": STATE.digest,
                    "Fleetbus-Removed": "false",
                },
            )
    await js.publish_async_completed()


def inventory(cluster: str, desired: dict[str, TasksetState]) -> tuple[str, bytes]:
    digest = InventoryDigest(
        cluster=cluster,
        sent_at=datetime.now(UTC),
        desired=desired,
        desired_digest=desired_state_digest(desired),
    )
    return f"fleet.inventory.{cluster}", encode_inventory(digest)


async def settled(gets: DirectGets, count: int) -> None:
    await eventually(lambda: len(gets.requests) >= count, "the direct gets observed", within=10)
    await asyncio.sleep(0.2)  # none beyond `count` may follow


async def test_a_batched_read_of_many_clusters_equals_reading_each_alone(
    event_store: EventStore, direct_gets: DirectGets
) -> None:
    # Names that prefix each other (c1, c10, c100) must not leak into each other's slice.
    clusters = [f"c{n}" for n in range(1, 151)]
    await write_fleet(event_store, clusters, 8)  # 1,200 messages: more than one reply holds
    reader = DesiredReader(event_store)
    asked = [*clusters, "empty"]

    batched = await reader.entries_of(asked, per_read=256)
    await settled(direct_gets, 3)
    # One request refused (413: over 1,024 results), then its two halves.
    assert direct_gets.requests == [151, 75, 76]

    # The next read groups by the sizes it learnt: 128 clusters of 8 fill one reply.
    again = await reader.entries_of(asked, per_read=256)
    await settled(direct_gets, 5)
    assert direct_gets.requests[3:] == [128, 23]
    assert again == batched

    alone = {cluster: await reader.cluster_entries(cluster) for cluster in asked}
    assert batched == alone
    assert batched["empty"] == {}
    assert sorted(batched["c1"]) == [f"app{n}" for n in range(8)]


async def test_anti_entropy_compares_a_batch_of_digests_with_one_read_and_repairs_as_before(
    event_store: EventStore, direct_gets: DirectGets
) -> None:
    clusters = [f"edge-{n:03d}" for n in range(100)]
    await write_fleet(event_store, clusters, 2)
    service = AntiEntropyService(
        event_store, settle=timedelta(0), cooldown=timedelta(minutes=5), per_read=256
    )
    held = {"app0": STATE, "app1": STATE}
    lacking = clusters[7]

    def digests() -> list[tuple[str, bytes]]:
        batch = [inventory(c, held if c != lacking else {"app0": STATE}) for c in clusters]
        batch.append(inventory("someone-else", {}))
        batch[3] = (batch[3][0], inventory("impostor", {})[1])  # names another cluster
        return batch

    assert await service.check_many(digests()) == []  # a first digest lacking is not enough
    await settled(direct_gets, 1)
    assert direct_gets.requests == [100]  # 99 valid clusters + someone-else, in one request

    repaired = await service.check_many(digests())
    await settled(direct_gets, 2)
    assert direct_gets.requests == [100, 100]
    assert [(e.cluster, e.tasksets) for e in repaired] == [(lacking, ["app1"])]
    assert set(service.last_seen) == (set(clusters) - {clusters[3]}) | {"someone-else"}

    # The repaired cluster cools down: the next batch leaves it out of the read.
    assert await service.check_many(digests()) == []
    await settled(direct_gets, 3)
    assert direct_gets.requests[2] == 99


async def test_the_running_service_takes_the_digests_waiting_together(
    event_store: EventStore, direct_gets: DirectGets
) -> None:
    clusters = [f"burst-{n:03d}" for n in range(200)]
    await write_fleet(event_store, clusters, 1)
    service = AntiEntropyService(event_store, settle=timedelta(0), per_read=256)
    running = asyncio.create_task(service.run())
    held = {"app0": STATE}
    try:

        async def listening() -> bool:
            if "probe" in service.last_seen:
                return True
            await event_store.nc.publish(*inventory("probe", {}))
            return False

        await eventually(listening, "the service listening", within=10)
        compared, reads = service.compared, service.reads
        for cluster in clusters:  # a burst: all sent before the service reads one
            await event_store.nc.publish(*inventory(cluster, held))
        await event_store.nc.flush()
        await eventually(
            lambda: service.compared - compared == len(clusters), "every digest compared"
        )
        assert service.reads - reads < len(clusters) // 4
        assert set(clusters) <= set(service.last_seen)
    finally:
        await cancel_and_wait([running])


async def test_a_cluster_too_large_to_read_at_once_does_not_hold_up_the_others(
    event_store: EventStore,
) -> None:
    await write_fleet(event_store, ["big"], 1025)  # over the 1,024 one reply may hold
    await write_fleet(event_store, ["small"], 1)
    reader = DesiredReader(event_store)
    slices = await reader.entries_of(["big", "small"])
    assert sorted(slices) == ["small"]
    assert sorted(slices["small"]) == ["app0"]

    service = AntiEntropyService(event_store, settle=timedelta(0))
    assert await service.check_many([inventory("big", {}), inventory("small", {})]) == []
    assert service.compared == 1
    assert {"big", "small"} <= set(service.last_seen)
