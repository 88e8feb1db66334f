"""The whole loop on a real apiserver: hub, edge with the Kubernetes executor, cluster controller.

`fleetbus up` runs the hub; `fleetbus cluster register --out` writes the edge bundle; the edge
(leaf nats-server and connector with the Kubernetes executor) and the cluster controller run
against the kube-apiserver from infra/envtest. A YAML bundle published with `fleetbus publish`
ends up as objects in the apiserver and as `applied` in `fleetbus status`; an edit made with
kubectl is corrected and shows up as DriftDetected and DriftCorrected in `fleetbus events`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from fleetbus.bundle import read_edge_bundle
from fleetbus.edge import EdgeRuntime, EdgeState
from tests.e2e.test_hub_process import Hub, hub
from tests.eventually import eventually_value
from tests.integration.controller_harness import ControllerEnv, running_controller
from tests.kube_envtest import KubeAPIServer

__all__ = ["hub"]

pytestmark = pytest.mark.kube

CLUSTER = "edge-k8s"


async def poll(
    read: Callable[[], Any], accept: Callable[[Any], bool], what: str, within_s: float = 90.0
) -> Any:
    """Run the blocking `read` off the event loop until `accept` likes its answer."""
    return await eventually_value(
        lambda: asyncio.to_thread(read), what, accept, within=within_s, interval=0.2
    )


def status_rows(hub: Hub, taskset: str) -> list[dict[str, Any]]:
    done = hub.fleetbus("status", taskset, "-o", "json")
    if done.returncode != 0:
        return []
    rows: list[dict[str, Any]] = json.loads(done.stdout)["status"]
    return rows


def event_types(hub: Hub) -> list[dict[str, Any]]:
    done = hub.fleetbus("events", "--stream", "reports", "--cluster", CLUSTER, "-o", "json")
    if done.returncode != 0:
        return []
    return [row["event"] for row in json.loads(done.stdout)]


def write_source(root: Path) -> Path:
    source = root / "board"
    source.mkdir()
    (source / "config.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: board-config\n"
        "data:\n  title: Fleet board\n  refresh: '30'\n"
    )
    (source / "service.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: board\n"
        "spec:\n  selector:\n    app: board\n  ports:\n    - port: 80\n"
    )
    return source


@pytest.fixture
async def controller(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> AsyncIterator[ControllerEnv]:
    async with running_controller(kube_apiserver.kubeconfig, kube_namespace) as running:
        yield running


async def test_publish_reaches_the_apiserver_and_drift_comes_back_corrected(
    hub: Hub,
    controller: ControllerEnv,
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    await asyncio.to_thread(hub.start)
    bundle_dir = tmp_path / "bundle"
    registered = await asyncio.to_thread(
        hub.fleetbus,
        "cluster",
        "register",
        CLUSTER,
        "--label",
        "env=lab",
        "--out",
        str(bundle_dir),
    )
    assert registered.returncode == 0, registered.stderr
    executor = KubernetesExecutor(
        ApiClient.from_kubeconfig(kube_apiserver.kubeconfig),
        cluster=CLUSTER,
        namespace=kube_namespace,
        apply_timeout=60,
    )
    edge = await EdgeRuntime.leaf(
        read_edge_bundle(bundle_dir), EdgeState(tmp_path / "edge"), executor
    )
    try:
        published = await asyncio.to_thread(
            hub.fleetbus,
            "publish",
            str(write_source(tmp_path)),
            "--name",
            "board",
            "--namespace",
            kube_namespace,
            "--cluster",
            CLUSTER,
        )
        assert published.returncode == 0, published.stderr

        rows = await poll(
            lambda: status_rows(hub, "board"),
            lambda rows: any(r["cluster"] == CLUSTER and r["state"] == "applied" for r in rows),
            "board applied on the cluster",
        )
        (row,) = [r for r in rows if r["cluster"] == CLUSTER]
        assert row["applied_version"] == 1
        assert row["applied_digest"] == row["desired_digest"]
        config: Any = await controller.get("v1", "ConfigMap", "board-config", kube_namespace)
        assert config["data"] == {"title": "Fleet board", "refresh": "30"}
        assert await controller.get("v1", "Service", "board", kube_namespace) is not None

        await asyncio.to_thread(
            kube_apiserver.kubectl,
            "patch",
            "configmap",
            "board-config",
            "-n",
            kube_namespace,
            "--type",
            "merge",
            "-p",
            json.dumps({"data": {"title": "defaced"}}),
        )

        events = await poll(
            lambda: event_types(hub),
            lambda events: any(e["type"] == "DriftCorrected" for e in events),
            "DriftCorrected in fleetbus events",
        )
        detected = [e for e in events if e["type"] == "DriftDetected"]
        corrected = [e for e in events if e["type"] == "DriftCorrected"]
        assert detected[0]["object"] == f"ConfigMap/{kube_namespace}/board-config"
        assert detected[0]["fields"] == ["/data/title"]
        assert detected[0]["cluster"] == CLUSTER
        assert corrected[0]["object"] == detected[0]["object"]
        assert corrected[0]["causation_id"] == detected[0]["id"]
        restored: Any = await controller.get("v1", "ConfigMap", "board-config", kube_namespace)
        assert restored["data"]["title"] == "Fleet board"
        table = await asyncio.to_thread(hub.fleetbus, "events", "--cluster", CLUSTER)
        assert "DriftCorrected" in table.stdout
    finally:
        await edge.stop()
        assert await asyncio.to_thread(hub.interrupt) == 0
