"""A blueprint on a real apiserver: the dependency (a CRD) is Ready before its dependents exist.

`fleetbus up` runs the hub; three tasksets and a blueprint are published with the CLI before
the cluster exists: `widget-crd` holds a CustomResourceDefinition, `widget-a` and `widget-b`
each hold a custom resource of that kind and depend on `widget-crd`. The cluster is then
registered with a matching label and its edge (Kubernetes executor) and the cluster controller
run against the kube-apiserver from infra/envtest. The dependents must be scheduled only after
the CRD was reported applied (Established), which the log's order and the objects' creation
times both show, and `fleetbus blueprint show` must end with the cluster in sync.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from fleetbus.bundle import read_edge_bundle
from fleetbus.edge import EdgeRuntime, EdgeState
from tests.e2e.test_hub_process import Hub, hub
from tests.e2e.test_kube_loop import poll
from tests.integration.controller_harness import ControllerEnv, running_controller
from tests.kube_envtest import KubeAPIServer

__all__ = ["hub"]

pytestmark = pytest.mark.kube

CLUSTER = "edge-platform"


@pytest.fixture
async def controller(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> AsyncIterator[ControllerEnv]:
    async with running_controller(kube_apiserver.kubeconfig, kube_namespace) as running:
        yield running


def write_sources(root: Path, group: str, namespace: str) -> dict[str, Path]:
    """The CRD taskset and two tasksets of custom resources of its kind."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    sources = {"widget-crd": [crd]}
    for name in ("widget-a", "widget-b"):
        sources[name] = [
            {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"size": name[-1]},
            }
        ]
    paths = {}
    for name, documents in sources.items():
        directory = root / name
        directory.mkdir()
        (directory / "objects.yaml").write_text(yaml.safe_dump_all(documents))
        paths[name] = directory
    return paths


def events_of(hub: Hub, *args: str) -> list[dict[str, Any]]:
    done = hub.fleetbus("events", *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def blueprint_clusters(hub: Hub) -> list[dict[str, Any]]:
    done = hub.fleetbus("blueprint", "show", "platform", "-o", "json")
    if done.returncode != 0:
        return []
    clusters: list[dict[str, Any]] = json.loads(done.stdout)["clusters"]
    return clusters


async def test_dependents_of_a_crd_appear_only_after_the_crd_is_ready_on_a_new_cluster(
    hub: Hub,
    controller: ControllerEnv,
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    await asyncio.to_thread(hub.start)
    group = f"{kube_namespace}.example.test"
    for name, path in write_sources(tmp_path, group, kube_namespace).items():
        done = await asyncio.to_thread(
            hub.fleetbus, "publish", str(path), "--name", name, "--namespace", kube_namespace
        )
        assert done.returncode == 0, done.stderr
    blueprint = tmp_path / "platform.yaml"
    blueprint.write_text(
        yaml.safe_dump(
            {
                "name": "platform",
                "selector": "tier=platform",
                "entries": [
                    {"taskset": "widget-crd"},
                    {"taskset": "widget-a", "dependsOn": ["widget-crd"]},
                    {"taskset": "widget-b", "dependsOn": ["widget-crd"]},
                ],
            }
        )
    )
    done = await asyncio.to_thread(hub.fleetbus, "blueprint", "publish", str(blueprint))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "blueprint platform v1 published"

    registered = await asyncio.to_thread(
        hub.fleetbus,
        "cluster",
        "register",
        CLUSTER,
        "--label",
        "tier=platform",
        "--out",
        str(tmp_path / "bundle"),
    )
    assert registered.returncode == 0, registered.stderr
    executor = KubernetesExecutor(
        ApiClient.from_kubeconfig(kube_apiserver.kubeconfig),
        cluster=CLUSTER,
        namespace=kube_namespace,
        apply_timeout=60,
    )
    edge = await EdgeRuntime.leaf(
        read_edge_bundle(tmp_path / "bundle"), EdgeState(tmp_path / "edge"), executor
    )
    try:
        clusters = await poll(
            lambda: blueprint_clusters(hub),
            lambda rows: [(r["cluster"], r["state"]) for r in rows] == [(CLUSTER, "in_sync")],
            "the cluster in sync with blueprint platform",
        )
        assert clusters[0]["version"] == 1

        reports = events_of(hub, "--stream", "reports", "--cluster", CLUSTER)
        crd_ready = min(
            datetime.fromisoformat(row["stored_at"])
            for row in reports
            if row["type"] == "TaskApplied" and row["event"]["taskset"] == "widget-crd"
        )
        log = events_of(hub, "--cluster", CLUSTER)
        held = {
            row["event"]["taskset"]: row["event"]["hold"]
            for row in log
            if row["type"] == "ClusterTaskHeld"
        }
        assert held == {"widget-a": "Waiting", "widget-b": "Waiting"}
        scheduled = {
            row["event"]["taskset"]: datetime.fromisoformat(row["stored_at"])
            for row in log
            if row["type"] == "ClusterTaskScheduled"
        }
        assert scheduled["widget-crd"] < crd_ready
        assert scheduled["widget-a"] >= crd_ready
        assert scheduled["widget-b"] >= crd_ready

        crd: Any = await controller.get(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", f"widgets.{group}"
        )
        established = next(c for c in crd["status"]["conditions"] if c["type"] == "Established")
        assert established["status"] == "True"
        for name in ("widget-a", "widget-b"):
            widget: Any = await controller.get(f"{group}/v1", "Widget", name, kube_namespace)
            created = datetime.fromisoformat(widget["metadata"]["creationTimestamp"])
            assert created >= datetime.fromisoformat(established["lastTransitionTime"])
            assert widget["spec"] == {"size": name[-1]}
    finally:
        await edge.stop()
        assert await asyncio.to_thread(hub.interrupt) == 0
