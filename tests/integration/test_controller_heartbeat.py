"""The controller's heartbeat Lease on a real apiserver: what it says, its last word, pruning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cluster_controller.health import ControllerHealth
from cluster_controller.heartbeat import PRUNE_AFTER, Heartbeat
from cluster_controller.kube import Kube
from cluster_controller.runtime import Controller, ControllerOptions
from edge_connector.kube_executor import KubernetesExecutor
from kube_contract.controller_status import (
    LABEL_CONTROLLER_STATUS,
    ControllerHeartbeat,
    ReplicaHeartbeat,
    lease_name,
    read_heartbeat,
)
from kube_contract.resources import LEASE
from tests.eventually import eventually, eventually_value
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def kube(kube_apiserver: KubeAPIServer) -> AsyncIterator[Kube]:
    client = Kube.connect(kube_apiserver.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


def heartbeat(
    kube: Kube, namespace: str, instance: str, clock: Clock, *, elected: bool
) -> Heartbeat:
    controller = Controller(kube, ControllerOptions(namespace=namespace, workers=1), clock=clock)
    return Heartbeat(
        kube,
        ControllerHealth(controller, "4.5.6"),
        namespace=namespace,
        instance=instance,
        elected=elected,
        clock=clock,
        interval_s=2.0,
    )


async def read(kube: Kube, namespace: str, instance: str) -> ReplicaHeartbeat:
    lease = await kube.get(LEASE, lease_name(instance), namespace)
    assert lease is not None
    assert lease["metadata"]["labels"] == {LABEL_CONTROLLER_STATUS: "true"}
    return read_heartbeat(lease)


async def said(kube: Kube, namespace: str, instance: str) -> ControllerHeartbeat:
    beat = (await read(kube, namespace, instance)).heartbeat
    assert beat is not None
    return beat


async def test_the_heartbeat_says_what_the_probes_say_and_its_last_word_on_stopping(
    kube: Kube, kube_namespace: str
) -> None:
    clock = Clock()
    single = heartbeat(kube, kube_namespace, "node-a-17", clock, elected=False)
    single.health.controller.record_error("reconcile of ns/web failed: boom")

    await single.write()
    beat = await read(kube, kube_namespace, "node-a-17")
    assert beat.name == "node-a-17"
    assert beat.duration_s == 6
    first = await said(kube, kube_namespace, "node-a-17")
    assert first.version == "4.5.6"
    assert first.role == "single"
    assert (first.live, first.ready) == (True, False)
    assert first.reason == "watches not synced yet: fleetnamespaces, steps, tasklets, tasks"
    assert first.watches == dict.fromkeys(("fleetnamespaces", "steps", "tasklets", "tasks"), False)
    assert first.last_error == "reconcile of ns/web failed: boom"
    assert first.last_error_at == clock.now

    await single.stopped("asked to stop")
    last = await said(kube, kube_namespace, "node-a-17")
    assert (last.live, last.ready, last.reason) == (False, False, "stopped: asked to stop")

    standby = heartbeat(kube, kube_namespace, "node-b-1", clock, elected=True)
    standby.health.standby = True
    await standby.write()
    waiting = await said(kube, kube_namespace, "node-b-1")
    assert (waiting.role, waiting.ready) == ("standby", True)
    standby.health.standby = False
    standby.health.started.set()
    await standby.write()
    leading = await said(kube, kube_namespace, "node-b-1")
    assert leading.role == "leader"


async def test_a_running_replica_removes_the_heartbeats_of_replicas_long_gone(
    kube: Kube, kube_namespace: str
) -> None:
    clock = Clock()
    gone = heartbeat(kube, kube_namespace, "old-pod-1", clock, elected=True)
    recent = heartbeat(kube, kube_namespace, "other-pod-1", clock, elected=True)
    await gone.write()
    clock.now += PRUNE_AFTER - timedelta(minutes=1)
    await recent.write()
    clock.now += timedelta(minutes=2)
    me = heartbeat(kube, kube_namespace, "new-pod-1", clock, elected=True)
    await me.write()

    await me.prune()

    assert await kube.get(LEASE, lease_name("old-pod-1"), kube_namespace) is None
    assert await kube.get(LEASE, lease_name("other-pod-1"), kube_namespace) is not None
    assert await kube.get(LEASE, lease_name("new-pod-1"), kube_namespace) is not None


async def test_a_change_of_readiness_is_written_at_once_not_at_the_next_renewal(
    kube: Kube, kube_namespace: str
) -> None:
    beat = heartbeat(kube, kube_namespace, "node-c-3", Clock(), elected=False)
    beat.interval_s = 3600.0
    beat.change_check_s = 0.05
    renewing = asyncio.create_task(beat.run())
    try:
        await eventually(lambda: _lease_exists(kube, kube_namespace, "node-c-3"), "first write")
        first = await said(kube, kube_namespace, "node-c-3")
        assert (first.live, first.ready) == (True, False)

        # Renewed only once an hour: only the change itself can write it now.
        beat.health.standby = True
        ready = await eventually_value(
            lambda: said(kube, kube_namespace, "node-c-3"),
            "the readiness change in the Lease",
            lambda s: s.ready,
            30,
        )
        assert ready.reason == "standby: another replica holds the leader Lease"
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)


async def _lease_exists(kube: Kube, namespace: str, instance: str) -> bool:
    return await kube.get(LEASE, lease_name(instance), namespace) is not None


async def test_the_connector_watches_the_heartbeat_leases_instead_of_listing_them_each_check(
    kube: Kube, kube_namespace: str, kube_apiserver: KubeAPIServer
) -> None:
    """The split layout: the connector's readiness check every second judges the Leases its
    watch holds; a Lease written or deleted reaches it through the watch, with no LIST."""
    executor = KubernetesExecutor.from_kubeconfig(
        kube_apiserver.kubeconfig, cluster="c", namespace=kube_namespace
    )
    lists: list[str] = []
    listing = executor.client.list

    def counted(resource: Any, **options: Any) -> Any:
        lists.append(resource.kind)
        return listing(resource, **options)

    executor.client.list = counted  # type: ignore[method-assign]
    clock = Clock()
    first = heartbeat(kube, kube_namespace, "node-w-1", clock, elected=False)
    try:
        await first.write()
        status = await executor.controller_status()
        assert len(status.replicas) == 1, "the first check lists: the watch has not yet"
        await eventually(lambda: executor._leases_synced.is_set(), "the Lease watch listed")
        listed = len(lists)
        for _ in range(5):
            status = await executor.controller_status()
            assert len(status.replicas) == 1
        second = heartbeat(kube, kube_namespace, "node-w-2", clock, elected=False)
        await second.write()
        await eventually_value(
            executor.controller_status,
            "the second replica seen through the watch",
            lambda s: len(s.replicas) == 2,
        )
        await kube.delete(LEASE, lease_name("node-w-1"), namespace=kube_namespace)
        await eventually_value(
            executor.controller_status,
            "the deleted Lease gone through the watch",
            lambda s: len(s.replicas) == 1,
        )
        assert len(lists) == listed, f"no LIST once the watch runs: {lists}"
    finally:
        await executor.close()
