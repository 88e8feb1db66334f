"""An edge whose data key the hub does not hand over at once keeps its desired state flowing.

A real hub nats-server with DESIRED and the cluster's durable consumer (provisioned as the hub
provisions it, but with an `ack_wait` of an hour: a message left unacknowledged would not come
back within the test); the real `KeyService`; the edge's real `DurableFeed` read the way the
connector reads it (following it again when it breaks). The key service is first stuck (a
responder on `fleet.keys.*` that never answers: requests time out), then gone (no
responders), then running. Throughout, sealed ClusterTasks must be NAKed and come back, a
newer generation must win over an older one on the same subject, and once the key arrives
everything is delivered, the key asked for no more.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from access.key_service import KeyService, key_reply
from edge_connector.errors import EdgeUnavailable
from edge_connector.jetstream import DurableFeed, KeyFetchSettings
from events import edges
from events.pull import PullSettings
from events.store import EventStore, connect
from events.streams import DESIRED_STREAM, HUB_DOMAIN, NANOS
from events.tasks import cancel_and_wait
from scheduler.provisioning import durable_config
from sealing.envelope import cluster_scope, seal_bytes
from sealing.keyring import Keyring
from taskset.codec import encode_cluster_task
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.integration.edge_harness import cluster_task, sample_taskset

CLUSTER = "east"
QUICK_KEYS = KeyFetchSettings(
    reply_within=0.3, attempts=2, pause=0.05, pause_max=0.1, redeliver_base=0.3, redeliver_max=1.0
)


@dataclass
class FeedReader:
    """Follows the feed like the connector does: every delivery recorded and acknowledged;
    a broken feed followed again."""

    feed: DurableFeed
    delivered: list[tuple[str, int | None]] = field(default_factory=list)
    interruptions: int = 0

    async def run(self) -> None:
        while True:
            try:
                async for delivery in self.feed.deliveries():
                    task = delivery.task
                    self.delivered.append(
                        (delivery.subject, task.generation if task is not None else None)
                    )
                    await delivery.ack()
            except EdgeUnavailable:
                self.interruptions += 1
            await asyncio.sleep(0.1)

    def generations(self, taskset: str) -> list[int | None]:
        subject = f"fleet.desired.{CLUSTER}.{taskset}"
        return [generation for s, generation in self.delivered if s == subject]


async def _write_sealed(store: EventStore, keys: Keyring, taskset: str, generation: int) -> None:
    task = cluster_task(CLUSTER, sample_taskset(taskset), generation=generation)
    subject = f"fleet.desired.{CLUSTER}.{taskset}"
    payload = seal_bytes(keys, cluster_scope(CLUSTER), encode_cluster_task(task), subject.encode())
    reply = await store.nc.request(subject, payload, timeout=5)
    assert "seq" in orjson.loads(reply.data)


@pytest.fixture
async def edge_nc(hub_nats: HubNats) -> AsyncIterator[NatsClient]:
    nc = await connect(
        hub_nats.url, credentials=hub_nats.credentials, inbox_prefix=edges.inbox_prefix(CLUSTER)
    )
    try:
        yield nc
    finally:
        await nc.close()


async def test_a_desired_state_whose_key_is_late_is_nakked_and_delivered_once_the_key_comes(
    hub_nats: HubNats, event_store: EventStore, edge_nc: NatsClient
) -> None:
    config = {**durable_config(CLUSTER), "ack_wait": 3600 * NANOS}
    await event_store.api_request(
        f"CONSUMER.CREATE.{DESIRED_STREAM}.{config['durable_name']}",
        {"stream_name": DESIRED_STREAM, "config": config, "action": ""},
    )
    keys = hub_nats.data.keyring()
    keys.ensure({cluster_scope(CLUSTER)})

    async def never_answer(msg: Msg) -> None:
        return None

    stuck = await event_store.nc.subscribe("fleet.keys.*", cb=never_answer)
    await event_store.nc.flush()
    feed = DurableFeed(
        edge_nc,
        CLUSTER,
        hub_domain=HUB_DOMAIN,
        settings=PullSettings(batch=10, expires=5.0, heartbeat=1.0),
        key_settings=QUICK_KEYS,
    )
    reader = FeedReader(feed)
    reading = asyncio.create_task(reader.run())
    service = KeyService(
        url=hub_nats.url,
        credentials=hub_nats.credentials,
        keys=keys,
        registered=lambda: {CLUSTER},
    )
    serving: asyncio.Task[None] | None = None
    try:
        await _write_sealed(event_store, keys, "web", 1)
        await _write_sealed(event_store, keys, "db", 1)

        # The key service is stuck: requests time out, both messages are NAKed, and they
        # come back (again and again) long before the consumer's hour of ack_wait.
        await eventually(lambda: feed.held_back >= 4, "the stuck key service: NAKs", within=20)
        assert feed.keys.requests >= 2
        assert reader.delivered == []

        # A newer generation of `web` replaces the older one, which is never delivered.
        await _write_sealed(event_store, keys, "web", 2)
        held = feed.held_back

        # The key service gone: no responders; the messages keep coming back.
        await stuck.unsubscribe()
        await eventually(lambda: feed.held_back >= held + 2, "no key service: NAKs", within=20)
        assert reader.delivered == []

        ready = asyncio.Event()
        serving = asyncio.create_task(service.run(ready))
        await asyncio.wait_for(ready.wait(), 10)
        await eventually(
            lambda: reader.generations("web") == [2] and reader.generations("db") == [1],
            "every desired state delivered once the key service answers",
            within=20,
        )
        assert reader.interruptions == 0

        # The key is kept: a new sealed message opens without asking the hub again.
        requests = feed.keys.requests
        await _write_sealed(event_store, keys, "cache", 1)
        await eventually(lambda: reader.generations("cache") == [1], "a later one", within=20)
        assert feed.keys.requests == requests
        assert reader.generations("web") == [2]

        info = await event_store.api_request(
            f"CONSUMER.INFO.{DESIRED_STREAM}.{config['durable_name']}"
        )
        assert info["num_ack_pending"] == 0
    finally:
        await cancel_and_wait([reading] if serving is None else [reading, serving])


async def test_the_key_service_answers_while_the_hubs_event_loop_is_busy(
    hub_nats: HubNats,
) -> None:
    keys = hub_nats.data.keyring()
    key_id, key = keys.active_key(cluster_scope(CLUSTER))
    service = KeyService(
        url=hub_nats.url,
        credentials=hub_nats.credentials,
        keys=hub_nats.data.keyring(),
        registered=lambda: {CLUSTER},
    )
    ready = asyncio.Event()
    serving = asyncio.create_task(service.run(ready))
    answers: list[dict[str, str]] = []
    try:
        await asyncio.wait_for(ready.wait(), 10)

        def ask() -> None:
            """An edge asking, on a loop and connection of its own."""

            async def once() -> bytes:
                nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
                try:
                    reply = await nc.request(f"fleet.keys.{CLUSTER}", key_id.encode(), timeout=5)
                    return bytes(reply.data)
                finally:
                    await nc.close()

            answers.append(orjson.loads(asyncio.run(once())))

        asker = threading.Thread(target=ask)
        asker.start()
        asker.join(timeout=15)  # the hub's loop (this test's) does nothing else meanwhile
        assert [answer.get("id") for answer in answers] == [key_id]
        assert base64.b64decode(answers[0]["key"]) == key
    finally:
        await cancel_and_wait([serving])


async def test_a_late_answer_to_an_earlier_ask_opens_the_message(
    hub_nats: HubNats, event_store: EventStore, edge_nc: NatsClient
) -> None:
    config = durable_config(CLUSTER)
    await event_store.api_request(
        f"CONSUMER.CREATE.{DESIRED_STREAM}.{config['durable_name']}",
        {"stream_name": DESIRED_STREAM, "config": config, "action": ""},
    )
    keys = hub_nats.data.keyring()
    keys.ensure({cluster_scope(CLUSTER)})
    asked: list[str] = []

    async def slow_service(msg: Msg) -> None:
        """Answers each ask (one at a time) 1.5 s late: after the edge's first wait ended."""
        asked.append(msg.data.decode())
        await asyncio.sleep(1.5)
        reply = key_reply(keys, CLUSTER, msg.data.decode(), {CLUSTER})
        await event_store.nc.publish(msg.reply, orjson.dumps(reply))

    await event_store.nc.subscribe("fleet.keys.*", cb=slow_service)
    await event_store.nc.flush()
    feed = DurableFeed(
        edge_nc,
        CLUSTER,
        hub_domain=HUB_DOMAIN,
        settings=PullSettings(batch=10, expires=5.0, heartbeat=1.0),
        key_settings=KeyFetchSettings(
            reply_within=1.0, attempts=2, pause=0.05, pause_max=0.1, redeliver_base=30.0
        ),
    )
    reader = FeedReader(feed)
    reading = asyncio.create_task(reader.run())
    try:
        await _write_sealed(event_store, keys, "web", 1)
        await eventually(lambda: reader.generations("web") == [1], "delivered", within=20)
        # The first ask's answer came during the second ask's wait, and was taken.
        assert feed.held_back == 0
        assert len(asked) == 2
    finally:
        await cancel_and_wait([reading])


@pytest.mark.parametrize(
    ("delivered", "delay"), [(1, 0.3), (2, 0.6), (3, 1.0), (10, 1.0), (0, 0.3)]
)
def test_the_nak_delay_doubles_with_each_delivery_up_to_its_bound(
    delivered: int, delay: float
) -> None:
    assert QUICK_KEYS.redelivery_delay(delivered) == pytest.approx(delay)
