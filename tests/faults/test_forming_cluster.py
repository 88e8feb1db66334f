"""Creating the hub's streams waits for a cluster that has no JetStream quorum, within a limit.

With two of three nodes down there is no meta leader: every stream create goes unanswered or is
refused as "temporarily unavailable". `fleetbus up --nats-url ... --replicas 3` started while a
cluster forms or recovers must wait for it instead of exiting; a cluster that never recovers
gets a clear error naming the stream and the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from events.store import EventStore, connect
from events.stream_api import ClusterSettling
from events.streams import EVENTS_STREAM, hub_streams
from fleetbus.datadir import DataDir
from tests.faults.nats_cluster import NatsCluster


@pytest.fixture
def one_of_three(tmp_path: Path) -> Iterator[NatsCluster]:
    """A formed 3-node cluster of which only the first node is still running."""
    cluster = NatsCluster(tmp_path / "cluster", DataDir(tmp_path / "hub"))
    try:
        cluster.start()
        for node in cluster.nodes[1:]:
            node.kill()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def store(one_of_three: NatsCluster) -> AsyncIterator[EventStore]:
    nc = await connect(one_of_three.urls, credentials=one_of_three.credentials)
    store = EventStore(nc, timeout=2.0, attempts=1)
    try:
        yield store
    finally:
        await store.close()


async def test_stream_creation_waits_for_a_quorum(
    one_of_three: NatsCluster, store: EventStore
) -> None:
    creating = asyncio.create_task(store.ensure_streams(hub_streams(replicas=3)))
    await asyncio.sleep(5)
    assert not creating.done(), "a stream was created without a JetStream quorum"
    await asyncio.to_thread(one_of_three.nodes[1].start, 60.0)
    await asyncio.wait_for(creating, timeout=90)
    info = await store.stream_info(EVENTS_STREAM)
    assert info["config"]["num_replicas"] == 3


async def test_a_cluster_that_never_settles_is_named_in_the_error(store: EventStore) -> None:
    with pytest.raises(
        ClusterSettling, match=f"cannot create stream {EVENTS_STREAM}: .* within 4 s"
    ):
        await store.ensure_streams(hub_streams(replicas=3), settle_within=4)
