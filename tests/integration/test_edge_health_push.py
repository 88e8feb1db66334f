"""The hub hears an edge's readiness change at once, not an inventory interval later.

A real hub (nats-server with its edge services), the edge's real leaf nats-server and a
connector-only edge (`fleetbus edge --without-controller`) on a real kube-apiserver; the
cluster controller runs apart from it, as `fleetbus controller` does: the real controller with
its real heartbeat Lease, which is the only way the connector learns of it. Regular digests
and heartbeat renewals come once an hour: whatever the hub hears within the waits below was
sent because something changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster_controller.crds import install_crds
from cluster_controller.health import ControllerHealth
from cluster_controller.heartbeat import Heartbeat
from cluster_controller.kube import Kube
from cluster_controller.runtime import Controller, ControllerOptions
from edge_connector.kube_executor import KubernetesExecutor
from events.inventory import EdgeStatus
from fleetbus.edge import EdgeRuntime, EdgeState
from tests.eventually import eventually, eventually_value
from tests.integration.edge_harness import EdgeHub, edge_hub
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube

CLUSTER = "split"
HOURLY = 3600.0


@pytest.fixture
async def kube(kube_apiserver: KubeAPIServer) -> AsyncIterator[Kube]:
    client = Kube.connect(kube_apiserver.kubeconfig)
    try:
        await install_crds(client)
        yield client
    finally:
        await client.close()


async def heard(hub: EdgeHub) -> EdgeStatus | None:
    return hub.services.antientropy.edge_status.get(CLUSTER)


def controller_ready(status: EdgeStatus | None) -> bool | None:
    if status is None or status.controller is None:
        return None
    return status.controller.ready


async def test_a_separate_controller_turning_ready_and_stopping_reaches_the_hub_at_once(
    tmp_path: Path, kube_apiserver: KubeAPIServer, kube: Kube, kube_namespace: str
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register(CLUSTER, inventory_interval=HOURLY)
        executor = KubernetesExecutor.from_kubeconfig(
            kube_apiserver.kubeconfig, cluster=CLUSTER, namespace=kube_namespace
        )
        edge = await EdgeRuntime.leaf(bundle, EdgeState(tmp_path / "edge"), executor)
        hub.edges.append(edge)
        first = await eventually_value(
            lambda: heard(hub), "the first digest at the hub", lambda s: s is not None, 60
        )
        assert controller_ready(first) is False, "no controller runs yet"

        # The controller starts apart from the edge, heartbeat renewed only once an hour.
        controller = Controller(kube, ControllerOptions(namespace=kube_namespace, workers=1))
        health = ControllerHealth(controller, "9.9.9")
        heartbeat = Heartbeat(
            kube,
            health,
            namespace=kube_namespace,
            instance="split-controller-0",
            elected=False,
            clock=controller.clock,
            interval_s=HOURLY,
        )
        health.started.set()
        beating = asyncio.create_task(heartbeat.run())
        running = asyncio.create_task(controller.run(health.ready))
        try:
            await eventually(lambda: health.readiness()[0], "the controller's watches synced", 60)
            synced_at = time.monotonic()
            ready = await eventually_value(
                lambda: heard(hub),
                "the controller ready at the hub",
                lambda s: controller_ready(s) is True and s is not None and s.ready,
                30,
            )
            told_after = time.monotonic() - synced_at
            assert ready is not None
            assert ready.controller is not None
            assert ready.controller.version == "9.9.9"
            assert told_after < 15, f"the hub heard it {told_after:.1f}s after it was ready"
        finally:
            running.cancel()
            beating.cancel()
            await asyncio.gather(running, beating, return_exceptions=True)

        # Its last word (stopped) reaches the hub the same way.
        await heartbeat.stopped("asked to stop")
        gone = await eventually_value(
            lambda: heard(hub),
            "the controller's stop at the hub",
            lambda s: controller_ready(s) is False,
            30,
        )
        assert gone is not None
        assert gone.controller is not None
        assert "stopped" in gone.controller.reason
