"""The edge as one process: connector and cluster controller side by side, failing apart.

A real hub (nats-server with its edge services), the edge's real leaf nats-server, and a fresh
real kube-apiserver of the test's own (the fault below deletes one of the fleetbus CRDs, which
no other test should see). The connector and the controller run in this one asyncio loop over
one HTTP client, as `fleetbus edge --kubeconfig` runs them. The controller is then broken by a
real failure: the fleetbus Namespace CRD is deleted under it, so its watch of that kind is
refused (404). It must be logged, reported to the hub through the edge's readiness in its
inventory digest, and started again (reinstalling its CRDs), while the connector keeps running;
afterwards a new taskset is applied as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_controller.crds import install_crds
from cluster_controller.kube import Kube
from events.catalog import TaskApplied
from events.inventory import EdgeStatus
from fleetbus.edge import ControllerSettings, EdgeRuntime, EdgeState
from fleetbus.edge_controller import executor_with_controller
from taskset.model import Step, Taskset
from tests.eventually import eventually, eventually_value
from tests.integration.edge_harness import EdgeHub, cluster_task, edge_hub
from tests.kube_envtest import (
    KubeAPIError,
    KubeAPIServer,
    create_namespace,
    running_kube_envtest,
)
from tests.leaks import unclosed_sockets

pytestmark = pytest.mark.kube

CLUSTER = "solo"
INVENTORY_INTERVAL_S = 3600.0
NAMESPACE_CRD = (
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/fleetnamespaces.fleetbus.io"
)


@pytest.fixture
def own_apiserver(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with running_kube_envtest(tmp_path / "apiserver") as api:
        yield api


def config_map_taskset(name: str, namespace: str) -> Taskset:
    return Taskset(
        name=name,
        namespace=namespace,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": {"taskset": name},
                }
            )
        ],
    )


async def applied(hub: EdgeHub, taskset: str) -> bool:
    return any(
        isinstance(event, TaskApplied) and event.taskset == taskset
        for _, event, _ in await hub.reports()
    )


async def edge_status(hub: EdgeHub) -> EdgeStatus | None:
    return hub.services.antientropy.edge_status.get(CLUSTER)


def delete_heartbeat_leases(api: KubeAPIServer, namespace: str) -> None:
    listing: Any = api.request(
        "GET",
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        "?labelSelector=fleetbus.io%2Fcontroller-status%3Dtrue",
    )
    assert listing["items"], "the controller's heartbeat Lease is written"
    for lease in listing["items"]:
        name = lease["metadata"]["name"]
        api.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")


def exists(api: KubeAPIServer, path: str) -> bool:
    with api.open("GET", path) as response:
        return int(response.status) == 200


async def test_a_controller_failing_in_the_edge_process_is_reported_and_restarted(
    tmp_path: Path, own_apiserver: KubeAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetbus")
    namespace = "apps"
    create_namespace(own_apiserver, namespace)
    async with edge_hub(tmp_path) as hub:
        # Digests on the interval only once an hour: within the waits below, the hub hears
        # of the edge's health only from the digests the edge sends at once on a change.
        bundle = await hub.register(CLUSTER, inventory_interval=INVENTORY_INTERVAL_S)
        executor, controller = executor_with_controller(
            own_apiserver.kubeconfig,
            CLUSTER,
            ControllerSettings(workers=2),
            namespace="fleetbus-system",
        )
        create_namespace(own_apiserver, "fleetbus-system")
        edge = await EdgeRuntime.leaf(bundle, EdgeState(tmp_path / "edge"), executor)
        hub.edges.append(edge)
        edge.attach_controller(controller)

        await hub.write_desired(cluster_task(CLUSTER, config_map_taskset("first", namespace)))
        await eventually(lambda: applied(hub, "first"), "the first taskset applied", 90)
        # The first digest, a second after the start, may have found the edge still starting;
        # the next would come an hour later: once the edge is ready, it tells the hub now.
        await eventually(lambda: _ready(edge), "the edge ready", 60)
        await eventually_value(
            lambda: edge_status(hub),
            "the edge ready at the hub",
            lambda s: s is not None and s.ready,
        )
        # The leaf runs sized for an edge: a soft memory limit, bounded JetStream storage.
        assert edge.server is not None
        assert edge.server.process is not None
        environ = await asyncio.to_thread(
            Path(f"/proc/{edge.server.process.pid}/environ").read_bytes
        )
        assert b"GOMEMLIMIT=32MiB" in environ.split(b"\0")
        assert b"GOMAXPROCS=1" in environ.split(b"\0")
        config = await asyncio.to_thread(edge.server.config_path.read_text)
        assert f"max_file_store: {2560 << 20}" in config
        first_controller = controller.controller
        assert controller.restarts == 0
        # The connector reads the controller's health in the process, not from its heartbeat
        # Lease: without the Lease (deleted here, written again at the next renewal) the
        # controller is still judged ready, naming this replica.
        await asyncio.to_thread(delete_heartbeat_leases, own_apiserver, "fleetbus-system")
        in_process = await executor.controller_status()
        assert in_process.ready, in_process.reason
        assert in_process.leader
        assert [r.name for r in in_process.replicas] == [in_process.leader]
        # One watch and one cache of the Tasks for the connector and the controller.
        assert await asyncio.to_thread(task_watches, own_apiserver) == 1
        assert executor.shared_tasks is controller.tasks

        # The fault: the Namespace CRD is deleted; the controller's watch of it is refused.
        await asyncio.to_thread(own_apiserver.request, "DELETE", NAMESPACE_CRD)

        # Reported, not swallowed: the hub hears of it at once (the inventory interval is an
        # hour: only the push on failure can deliver it within the wait), with the reason.
        reported = await eventually_value(
            lambda: edge_status(hub),
            "the controller's failure reported to the hub",
            lambda s: s is not None and not s.ready and "controller not ready: failed" in s.reason,
        )
        assert reported is not None
        assert "watch fleetnamespaces: 404 page not found (HTTP 404 NotFound)" in reported.reason
        assert "\n" not in reported.reason
        failing = await executor.controller_status()
        assert not failing.ready
        assert "failed (" in failing.reason, failing.reason
        assert failing.last_error
        assert any(
            "controller component failed" in r.getMessage() and r.levelno >= logging.ERROR
            for r in caplog.records
        ), "the failure is logged as an error"
        assert (await edge.live())[0], "the connector keeps running while the controller is down"
        # The shared Task cache outlives the controller: the connector still reads its Tasks.
        held = await executor.inventory()
        assert "first" in held.applied

        # Restarted: a new controller installs its CRDs again, syncs, and the edge is ready.
        await eventually(lambda: controller.health()[0], "the controller running again", 60)
        assert controller.restarts >= 1
        assert controller.controller is not first_controller
        assert await asyncio.to_thread(exists, own_apiserver, NAMESPACE_CRD)
        await eventually_value(
            lambda: edge_status(hub),
            "the edge ready again at the hub",
            lambda s: s is not None and s.ready,
        )
        metrics = await edge.metrics()
        assert 'fleetbus_edge_component_up{component="controller"} 1' in metrics
        restarts = 'fleetbus_edge_component_restarts_total{component="controller"}'
        assert f"{restarts} {controller.restarts}" in metrics

        # And it reconciles: a new taskset is applied through the restarted controller.
        await hub.write_desired(cluster_task(CLUSTER, config_map_taskset("second", namespace)))
        await eventually(lambda: applied(hub, "second"), "the second taskset applied", 90)
        live: Any = await asyncio.to_thread(
            own_apiserver.request, "GET", f"/api/v1/namespaces/{namespace}/configmaps/second"
        )
        assert live["data"] == {"taskset": "second"}


async def test_while_the_controller_keeps_failing_the_connector_keeps_taking_desired_state(
    tmp_path: Path, own_apiserver: KubeAPIServer
) -> None:
    """With `--skip-crds` the controller cannot repair its CRD itself: it fails, waits, fails
    again (with growing pauses) until someone installs the CRD again. Meanwhile the connector
    takes new desired state and writes its Task; once the CRD is back the controller runs
    again and that taskset is applied.

    Each failure cancels the controller's list and watch requests at once, some of them in
    their TLS handshake with the apiserver: none of their connections may be left open."""
    namespace = "apps"
    create_namespace(own_apiserver, namespace)
    create_namespace(own_apiserver, "fleetbus-system")
    kube = Kube.connect(own_apiserver.kubeconfig)
    try:
        await install_crds(kube)
        async with edge_hub(tmp_path) as hub:
            bundle = await hub.register(CLUSTER, inventory_interval=30.0)
            executor, controller = executor_with_controller(
                own_apiserver.kubeconfig,
                CLUSTER,
                ControllerSettings(workers=2, manage_crds=False),
                namespace="fleetbus-system",
            )
            edge = await EdgeRuntime.leaf(bundle, EdgeState(tmp_path / "edge"), executor)
            hub.edges.append(edge)
            edge.attach_controller(controller)
            await eventually(lambda: controller.health()[0], "the controller running", 60)

            await asyncio.to_thread(own_apiserver.request, "DELETE", NAMESPACE_CRD)
            await eventually(
                lambda: controller.restarts >= 2, "the controller failing again and again", 30
            )
            assert not controller.health()[0]
            await hub.write_desired(cluster_task(CLUSTER, config_map_taskset("during", namespace)))
            await eventually(
                lambda: "during" in edge.connector.held, "the connector taking desired state", 30
            )
            await eventually(
                lambda: _task_exists(own_apiserver, "during"), "the connector writing its Task", 30
            )
            assert not await applied(hub, "during"), "nothing reconciles it yet"

            await install_crds(kube)
            await eventually(lambda: controller.health()[0], "the controller running again", 60)
            await eventually(lambda: applied(hub, "during"), "the taskset applied at last", 90)
    finally:
        await kube.close()
    assert unclosed_sockets() == [], "every connection of the stopped edge is closed"


def task_watches(api: KubeAPIServer) -> int:
    """How many watches of Tasks the apiserver serves now."""
    with api.open("GET", "/metrics") as response:
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("apiserver_longrunning_requests{")
        and 'resource="tasks"' in line
        and 'verb="WATCH"' in line
    )


async def _ready(edge: EdgeRuntime) -> bool:
    ready, _ = await edge.ready()
    return ready


async def _task_exists(api: KubeAPIServer, name: str) -> bool:
    path = f"/apis/fleetbus.io/v1alpha1/namespaces/fleetbus-system/tasks/{name}"
    try:
        return await asyncio.to_thread(exists, api, path)
    except KubeAPIError:
        return False
