"""The edge survives a Kubernetes cluster's start-up, on a fresh real apiserver.

The edge's Kubernetes executor starts at the same moment as the cluster controller, before the
fleetbus CRDs exist: its Step and Task watches meet 404 (the kinds are not served), then,
right after the controller creates the CRDs, the answers of storage still initializing (429).
It must wait them out and then deliver and follow drift as usual, instead of ending with
"watching Steps failed: storage is (re)initializing".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest

from edge_connector.executor import DriftObserved
from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from taskset.model import Step, Taskset
from tests.integration.controller_harness import cluster_task, running_controller, unique
from tests.kube_envtest import KubeAPIServer, create_namespace, running_kube_envtest

pytestmark = pytest.mark.kube


@pytest.fixture
def fresh_apiserver(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with running_kube_envtest(tmp_path / "fresh") as api:
        yield api


def waiting_on_404(caplog: pytest.LogCaptureFixture) -> set[str]:
    """Which of the executor's watches have logged a retry after a 404."""
    return {
        record.getMessage().split(":")[0]
        for record in caplog.records
        if "answered 404" in record.getMessage()
    }


async def test_an_edge_started_with_the_controller_on_a_fresh_apiserver_waits_then_delivers(
    fresh_apiserver: KubeAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_connector.kube_executor")
    namespace = unique("edge")
    create_namespace(fresh_apiserver, namespace)
    executor = KubernetesExecutor(
        ApiClient.from_kubeconfig(fresh_apiserver.kubeconfig),
        cluster="edge-test",
        namespace=namespace,
        apply_timeout=120,
    )
    name = unique("early")
    task = cluster_task(
        Taskset(
            name=name,
            namespace=namespace,
            install=[
                Step(
                    object={
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "early"},
                        "data": {"k": "v"},
                    }
                )
            ],
        )
    )
    observations: asyncio.Queue[DriftObserved] = asyncio.Queue()

    async def follow() -> None:
        async with aclosing(executor.drift()) as drift:
            async for observed in drift:
                observations.put_nowait(observed)

    following = asyncio.create_task(follow())
    applying = asyncio.create_task(executor.apply(task))
    try:
        # Both have asked the apiserver, and been told the kinds are not served, before the
        # controller creates the CRDs.
        deadline = asyncio.get_running_loop().time() + 30
        while not {"watching Steps", "watching Tasks"} <= waiting_on_404(caplog):
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            await asyncio.sleep(0.05)
        async with running_controller(fresh_apiserver.kubeconfig, namespace):
            result = await asyncio.wait_for(applying, 120)
            assert result.objects == 1
            assert not following.done(), following
            await asyncio.to_thread(
                fresh_apiserver.kubectl,
                "patch",
                "configmap",
                "early",
                "-n",
                namespace,
                "--type",
                "merge",
                "-p",
                json.dumps({"data": {"k": "edited"}}),
            )
            observed = await asyncio.wait_for(observations.get(), 60)
    finally:
        for task_ in (following, applying):
            task_.cancel()
        await asyncio.gather(following, applying, return_exceptions=True)
        await executor.close()

    assert observed.taskset == name
    assert observed.fields == ["/data/k"]
