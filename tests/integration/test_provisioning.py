"""Provisioning many clusters at once: every durable and REPORTS source, none missing.

The plan for a fleet is made real with many JetStream API requests in flight; these tests
check the result on a real nats-server, cluster by cluster, not how long it took.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from events import edges
from events.catalog import ClusterDeregistered, ClusterRegistered, Event
from events.store import EventStore
from events.streams import DESIRED_STREAM, REPORTS_STREAM, hub_streams, reports_stream
from events.tasks import cancel_and_wait
from scheduler.provisioning import ProvisioningService

NOW = datetime(2025, 1, 1, tzinfo=UTC)
CLUSTERS = 400


def registration(name: str, client: bool) -> ClusterRegistered:
    labels = {edges.CONNECTION_LABEL: edges.CLIENT} if client else {}
    return ClusterRegistered(
        id=f"reg-{name}",
        occurred_at=NOW,
        actor="test",
        cluster=name,
        labels=labels,
        certificate_fingerprint="" if client else "ab" * 32,
    )


async def names(
    store: EventStore, api: str, key: str, body: dict[str, str] | None = None
) -> set[str]:
    """Every name a paged JetStream NAMES request lists."""
    found: set[str] = set()
    while True:
        answer = await store.api_request(api, {**(body or {}), "offset": len(found)})
        page = answer.get(key) or []
        found.update(page)
        if not page or len(found) >= int(answer["total"]):
            return found


async def append_all(store: EventStore, events: list[Event]) -> int:
    last = 0
    for start in range(0, len(events), 500):
        result = await store.append(events[start : start + 500])
        last = max(result.sequences)
    return last


async def test_every_one_of_hundreds_of_registered_clusters_is_provisioned(
    event_store: EventStore,
) -> None:
    clusters = {f"c-{i}": i % 2 == 0 for i in range(CLUSTERS)}
    last = await append_all(
        event_store, [registration(name, client) for name, client in clusters.items()]
    )
    service = ProvisioningService(event_store)
    running = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(120):
            await service.wait_applied(last)
        durables = await names(event_store, f"CONSUMER.NAMES.{DESIRED_STREAM}", "consumers")
        assert {edges.desired_durable(name) for name in clusters} <= durables
        # The listing rehoming reads, its pages asked for several at a time, names each one.
        assert set(await service.provisioner.durable_leaders()) == durables
        info = await event_store.stream_info(REPORTS_STREAM)
        sourced = {source["name"] for source in info["config"]["sources"]}
        # Leaf clusters are sourced; client clusters publish into REPORTS themselves.
        assert sourced == {edges.outbox_stream(n) for n, client in clusters.items() if not client}

        gone = [name for name in clusters if int(name.split("-")[1]) % 4 < 2]
        last = await append_all(
            event_store,
            [
                ClusterDeregistered(id=f"dereg-{n}", occurred_at=NOW, actor="test", cluster=n)
                for n in gone
            ],
        )
        async with asyncio.timeout(120):
            await service.wait_applied(last)
        durables = await names(event_store, f"CONSUMER.NAMES.{DESIRED_STREAM}", "consumers")
        assert not {edges.desired_durable(name) for name in gone} & durables
        kept = set(clusters) - set(gone)
        assert {edges.desired_durable(name) for name in kept} <= durables
        info = await event_store.stream_info(REPORTS_STREAM)
        assert {s["name"] for s in info["config"]["sources"]} == {
            edges.outbox_stream(name) for name in kept if not clusters[name]
        }
    finally:
        await cancel_and_wait([running])


async def test_hub_side_outboxes_of_an_earlier_hub_are_removed_and_reports_get_their_subjects(
    event_store: EventStore,
) -> None:
    # A hub from before client clusters published directly: REPORTS without subjects, and a
    # hub-side outbox stream per client cluster, capturing that cluster's report subjects.
    older = reports_stream()
    del older["subjects"]
    await event_store.api_request(f"STREAM.UPDATE.{REPORTS_STREAM}", older)
    await event_store.ensure_stream(
        {
            "name": edges.outbox_stream("sim-1"),
            "subjects": ["fleet.report.sim-1.>"],
            "storage": "file",
            "num_replicas": 1,
        }
    )
    last = await append_all(event_store, [registration("sim-1", client=True)])
    service = ProvisioningService(event_store)
    running = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(60):
            await service.wait_applied(last)
        streams = await names(event_store, "STREAM.NAMES", "streams")
        assert edges.outbox_stream("sim-1") not in streams
        assert REPORTS_STREAM in streams
        info = await event_store.stream_info(REPORTS_STREAM)
        assert info["config"]["subjects"] == ["fleet.report.>"]
        ack = await event_store.nc.request("fleet.report.sim-1.web", b"{}", timeout=5)
        assert b'"stream":"REPORTS"' in ack.data.replace(b" ", b"")
    finally:
        await cancel_and_wait([running])


async def test_a_hub_ensuring_its_streams_at_start_keeps_the_leaf_clusters_sources(
    event_store: EventStore,
) -> None:
    leaves = ["edge-1", "edge-2", "edge-3"]
    last = await append_all(event_store, [registration(name, client=False) for name in leaves])
    service = ProvisioningService(event_store)
    running = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(60):
            await service.wait_applied(last)
    finally:
        await cancel_and_wait([running])
    sourced = {edges.outbox_stream(name) for name in leaves}

    # What `fleetbus up` does first on every start, before provisioning runs again.
    await event_store.ensure_streams(hub_streams())
    info = await event_store.stream_info(REPORTS_STREAM)
    assert {source["name"] for source in info["config"]["sources"]} == sourced

    # Only the fields another component owns are kept: the rest still follows the config.
    described = {**reports_stream(), "description": "every cluster report"}
    await event_store.ensure_stream(described, keep=("sources",))
    info = await event_store.stream_info(REPORTS_STREAM)
    assert info["config"]["description"] == "every cluster report"
    assert {source["name"] for source in info["config"]["sources"]} == sourced


async def test_a_replaced_durable_answers_again_and_delivers_the_whole_desired_state(
    event_store: EventStore,
) -> None:
    provisioner = ProvisioningService(event_store).provisioner
    await provisioner.ensure_durable("alpha")
    js = event_store.nc.jetstream()
    for taskset in ("db", "web"):
        await js.publish(f"fleet.desired.alpha.{taskset}", taskset.encode(), stream=DESIRED_STREAM)
    durable = edges.desired_durable("alpha")
    pull = await js.pull_subscribe_bind(durable, DESIRED_STREAM)
    for msg in await pull.fetch(2, timeout=5):
        await msg.ack_sync()
    await pull.unsubscribe()

    await provisioner.replace_durable("alpha")
    # Replaced twice over: a durable that no longer exists is created all the same.
    await provisioner.delete_durable("alpha")
    await provisioner.replace_durable("alpha")

    pull = await js.pull_subscribe_bind(durable, DESIRED_STREAM)
    again = await pull.fetch(2, timeout=5)
    assert sorted(msg.data for msg in again) == [b"db", b"web"]
    await pull.unsubscribe()
