"""The connector's Kubernetes executor with the cluster controller, on a real apiserver.

The executor writes Task and Step resources and reads back what the controller reports:
applied, failed (with phase, object and reason), drift observations (each once), removal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cluster_controller.crds import install_crds
from cluster_controller.kube import Kube
from edge_connector.errors import ApplyFailed
from edge_connector.executor import DriftObserved
from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from kube_contract.resources import STEP
from taskset.model import Step, Taskset
from tests.integration.controller_harness import (
    ControllerEnv,
    cluster_task,
    unique,
)
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube


def executor_for(kubeconfig: Path, namespace: str, timeout: float = 60.0) -> KubernetesExecutor:
    client = ApiClient.from_kubeconfig(kubeconfig)
    return KubernetesExecutor(
        client, cluster="edge-test", namespace=namespace, apply_timeout=timeout
    )


@pytest.fixture
async def executor(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> AsyncIterator[KubernetesExecutor]:
    running = executor_for(kube_apiserver.kubeconfig, kube_namespace)
    try:
        yield running
    finally:
        await running.close()


def configmaps(name: str, namespace: str, *names: str) -> Taskset:
    return Taskset(
        name=name,
        namespace=namespace,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": n},
                    "data": {"k": "v"},
                }
            )
            for n in names
        ],
    )


async def test_apply_returns_once_the_controller_reports_the_task_ready(
    env: ControllerEnv, executor: KubernetesExecutor
) -> None:
    name = unique("applied")
    task = cluster_task(configmaps(name, env.namespace, "a", "b"), generation=4)

    result = await executor.apply(task)

    assert result.objects == 2
    assert await env.get("v1", "ConfigMap", "a", env.namespace) is not None
    inventory = await executor.inventory()
    assert inventory.applied[name].generation == 4
    assert inventory.applied[name].digest == task.digest
    assert inventory.objects == 2
    again = await executor.apply(task)
    assert again.objects == 2


async def test_applying_what_the_task_already_stands_for_writes_nothing_and_waits(
    env: ControllerEnv, executor: KubernetesExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A correction or a retry of the same ClusterTask does not rewrite every Step: the Task
    written for this generation and digest is there, so only the controller's answer is read."""
    name = unique("unchanged")
    task = cluster_task(configmaps(name, env.namespace, "a", "b", "c"), generation=2)
    await executor.apply(task)
    writes: list[str] = []
    real_apply = executor.client.apply

    async def apply(obj: object, **options: object) -> object:
        writes.append(type(obj).__name__)
        return await real_apply(obj, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(executor.client, "apply", apply)

    again = await executor.apply(task)

    assert again.objects == 3
    assert writes == []
    newer = cluster_task(configmaps(name, env.namespace, "a", "b", "c", "d"), generation=3)
    assert (await executor.apply(newer)).objects == 4
    assert len(writes) == 5, writes  # four Steps, then the Task


async def test_a_failing_task_raises_apply_failed_naming_phase_object_and_reason(
    env: ControllerEnv, executor: KubernetesExecutor
) -> None:
    name = unique("refused")
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "bad"},
                    "spec": {"ports": [{"port": 0}]},
                }
            )
        ],
    )

    with pytest.raises(ApplyFailed) as failed:
        await executor.apply(cluster_task(taskset))

    assert failed.value.phase == "install"
    assert failed.value.object == f"Service/{env.namespace}/bad"
    assert failed.value.reason.startswith("ApplyRejected: ")
    assert name not in (await executor.inventory()).applied


async def test_drift_is_observed_once_and_remove_takes_everything_away(
    env: ControllerEnv, executor: KubernetesExecutor, kube_apiserver: KubeAPIServer
) -> None:
    name = unique("watched")
    task = cluster_task(configmaps(name, env.namespace, "watched"))
    await executor.apply(task)
    observations: asyncio.Queue[DriftObserved] = asyncio.Queue()

    async def follow() -> None:
        async for observed in executor.drift():
            observations.put_nowait(observed)

    following = asyncio.create_task(follow())
    try:
        kube_apiserver.kubectl(
            "patch",
            "configmap",
            "watched",
            "-n",
            env.namespace,
            "--type",
            "merge",
            "-p",
            json.dumps({"data": {"k": "edited"}}),
        )
        observed = await asyncio.wait_for(observations.get(), 60)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)

    assert observed.taskset == name
    assert observed.object == f"ConfigMap/{env.namespace}/watched"
    assert observed.fields == ["/data/k"]
    assert not observed.deleted
    step = (
        await env.kube.list(
            STEP, namespace=env.namespace, label_selector=f"fleetbus.io/task={name}"
        )
    ).items[0]
    assert step["metadata"]["annotations"]["fleetbus.io/drift-reported"] == "1"
    settled = await executor.apply(task)
    assert settled.objects == 1

    removed = await executor.remove(task)

    assert removed.objects == 0
    assert await env.get("v1", "ConfigMap", "watched", env.namespace) is None
    assert name not in (await executor.inventory()).applied
    assert (
        await env.kube.list(
            STEP, namespace=env.namespace, label_selector=f"fleetbus.io/task={name}"
        )
    ).items == []


async def test_without_a_controller_apply_fails_with_a_reason_instead_of_hanging(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    kube = Kube.connect(kube_apiserver.kubeconfig)
    try:
        await install_crds(kube)
    finally:
        await kube.close()
    executor = executor_for(kube_apiserver.kubeconfig, kube_namespace, timeout=2.0)
    try:
        with pytest.raises(ApplyFailed) as failed:
            await executor.apply(cluster_task(configmaps(unique("lonely"), kube_namespace, "x")))
    finally:
        await executor.close()

    assert "not ready after 2s" in failed.value.reason
