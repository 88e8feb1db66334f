"""No client-library exception leaves the Kubernetes adapters: only fleetbus errors do.

Checked against a real apiserver (missing objects, unknown kinds, refused objects) and against
an address where nothing listens (unreachable apiserver).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cluster_controller.errors import KubeRejected, KubeUnavailable, NotFound, UnknownKind
from cluster_controller.kube import Kube
from edge_connector.errors import ApplyFailed
from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from fleetbus.natsserver import free_port
from kube_contract.resources import ResourceInfo
from taskset.errors import FleetbusError
from taskset.model import Step, Taskset
from tests.integration.controller_harness import cluster_task
from tests.kube_envtest import KubeAPIServer

CONFIGMAP = ResourceInfo(
    group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True
)


def kubeconfig_nowhere(kube_apiserver: KubeAPIServer, tmp_path: Path) -> Path:
    config: dict[str, Any] = json.loads(kube_apiserver.kubeconfig.read_text())
    # A port that stays closed: outside the range any bind(0) or outgoing connection takes
    # from, and claimed so that no other server of the test suite listens on it.
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    path = tmp_path / "nowhere.kubeconfig"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
async def kube(kube_apiserver: KubeAPIServer) -> AsyncIterator[Kube]:
    client = Kube.connect(kube_apiserver.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.kube
async def test_an_unreachable_apiserver_is_kube_unavailable(
    kube_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    kube = Kube.connect(kubeconfig_nowhere(kube_apiserver, tmp_path))
    try:
        with pytest.raises(KubeUnavailable) as raised:
            await kube.get(CONFIGMAP, "x", "default")
    finally:
        await kube.close()

    assert isinstance(raised.value, FleetbusError)
    assert "cannot reach the apiserver" in str(raised.value)


@pytest.mark.kube
async def test_missing_objects_unknown_kinds_and_refused_objects_are_fleetbus_errors(
    kube: Kube, kube_namespace: str
) -> None:
    assert await kube.get(CONFIGMAP, "missing", kube_namespace) is None
    with pytest.raises(NotFound):
        await kube.patch(CONFIGMAP, "missing", {"data": {}}, namespace=kube_namespace)
    with pytest.raises(UnknownKind, match=r"serves no Gadget in example\.invalid/v1"):
        await kube.resource("example.invalid/v1", "Gadget")
    with pytest.raises(KubeRejected, match="ConfigMap"):
        await kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "Not_A_Valid_Name", "namespace": kube_namespace},
            },
            field_manager="test",
        )


@pytest.mark.kube
async def test_the_executor_turns_an_unreachable_apiserver_into_apply_failed(
    kube_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    client = ApiClient.from_kubeconfig(kubeconfig_nowhere(kube_apiserver, tmp_path))
    executor = KubernetesExecutor(client, cluster="c", namespace="ns", apply_timeout=1.0)
    taskset = Taskset(
        name="t",
        install=[Step(object={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})],
    )
    try:
        with pytest.raises(ApplyFailed) as raised:
            await executor.apply(cluster_task(taskset))
    finally:
        await executor.close()

    assert "unreachable" in raised.value.reason
