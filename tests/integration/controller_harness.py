"""Helpers for the cluster controller's integration tests on the real apiserver (infra/envtest).

A test starts a real `Controller` in its own event loop (scoped to the test's namespace for
Tasks and Steps) and writes Task and Step resources exactly as the connector's Kubernetes
executor does (`edge_connector.kube_executor.task_resources`). On the acting test cluster
(`kube_cluster`) Jobs and Deployments reach their statuses through the real controllers; a test
that must see the moment before that gives the pod template `HOLD` and later `release`s the
pods (see infra/envtest/kwok/stages.yaml).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cluster_controller.crds import install_crds
from cluster_controller.kube import Kube
from cluster_controller.runtime import Controller, ControllerOptions
from edge_connector.kube_executor import FIELD_MANAGER, step_name, task_resources
from kube_contract.resources import EVENT, STEP, TASK, ResourceInfo
from taskset.digest import digest_of
from taskset.model import ClusterTask, ObjectRef, Phase, Taskset
from tests.eventually import eventually_value

T = TypeVar("T")

DEADLINE_S = 60.0

POD = ResourceInfo(group="", version="v1", kind="Pod", plural="pods", namespaced=True)

HOLD_ANNOTATION = "fleetbus.test/hold"
HOLD = {HOLD_ANNOTATION: "true"}
"""Pod template annotations that keep the simulated kubelet from readying or finishing a pod."""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cluster_task(taskset: Taskset, *, generation: int = 1, version: int = 1) -> ClusterTask:
    return ClusterTask(
        cluster="edge-test",
        taskset_name=taskset.name,
        version=version,
        generation=generation,
        digest=digest_of(taskset),
        taskset=taskset,
    )


@dataclass
class ControllerEnv:
    kube: Kube
    controller: Controller | None
    """The in-process controller, or None when one runs elsewhere (as a process)."""
    namespace: str
    """Where Tasks and Steps live (the test's namespace)."""

    async def publish(self, task: ClusterTask) -> None:
        """Write the Steps, then the Task, the way the Kubernetes executor does."""
        resources = task_resources(task, self.namespace)
        for step in resources.steps:
            await self.kube.apply(step, field_manager=FIELD_MANAGER, info=STEP)
        await self.kube.apply(resources.task, field_manager=FIELD_MANAGER, info=TASK)

    async def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Any:
        info = await self.kube.resource(api_version, kind)
        return await self.kube.get(info, name, namespace)

    async def task(self, name: str) -> dict[str, Any] | None:
        return await self.kube.get(TASK, name, self.namespace)

    async def step(self, taskset: str, phase: Phase, ref: ObjectRef) -> dict[str, Any]:
        found = await self.kube.get(STEP, step_name(taskset, phase, ref), self.namespace)
        assert found is not None, f"no Step for {ref} in {phase}"
        return found

    async def wait_for(
        self,
        what: str,
        check: Callable[[], Awaitable[T | None]],
        deadline_s: float = DEADLINE_S,
    ) -> T:
        """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
        return await eventually_value(check, what, within=deadline_s, interval=0.05)

    async def task_phase(self, name: str, phase: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            task = await self.task(name)
            status = (task or {}).get("status") or {}
            return status if status.get("phase") == phase else None

        return await self.wait_for(f"Task {name} to be {phase}", check)

    async def exists(self, api_version: str, kind: str, name: str, namespace: str = "") -> Any:
        return await self.wait_for(
            f"{kind} {namespace}/{name} to exist",
            lambda: self.get(api_version, kind, name, namespace),
        )

    async def gone(self, api_version: str, kind: str, name: str, namespace: str = "") -> bool:
        async def check() -> bool:
            return await self.get(api_version, kind, name, namespace) is None

        return await self.wait_for(f"{kind} {namespace}/{name} to be gone", check)

    async def release(self, namespace: str, label_selector: str) -> int:
        """Let held pods (pod template annotated `HOLD`) become Ready or, for Jobs, finish."""
        pods = await self.kube.list(POD, namespace=namespace, label_selector=label_selector)
        for pod in pods.items:
            await self.kube.patch(
                POD,
                pod["metadata"]["name"],
                {"metadata": {"annotations": {HOLD_ANNOTATION: None}}},
                namespace=namespace,
            )
        return len(pods.items)

    async def release_when_running(
        self, namespace: str, label_selector: str, count: int = 1
    ) -> None:
        """Wait until `count` held pods exist, then release them."""

        async def check() -> bool:
            pods = await self.kube.list(POD, namespace=namespace, label_selector=label_selector)
            return len(pods.items) >= count

        await self.wait_for(f"{count} pods {label_selector} in {namespace}", check)
        await self.release(namespace, label_selector)

    async def step_job_name(self, taskset: str, phase: Phase, ref: ObjectRef) -> str:
        async def check() -> str | None:
            step = await self.step(taskset, phase, ref)
            job = (step.get("status") or {}).get("job") or {}
            return str(job["name"]) if job.get("name") else None

        return await self.wait_for(f"the Job of the Step for {ref}", check)

    async def events(self, involved: str, reason: str) -> list[dict[str, Any]]:
        listing = await self.kube.list(EVENT, namespace=self.namespace)
        return [
            e
            for e in listing.items
            if e.get("reason") == reason and (e.get("involvedObject") or {}).get("name") == involved
        ]


@asynccontextmanager
async def running_controller(
    kubeconfig: Path, namespace: str, *, resync_seconds: float = 600.0
) -> AsyncIterator[ControllerEnv]:
    kube = Kube.connect(kubeconfig)
    try:
        await install_crds(kube)
        controller = Controller(
            kube,
            ControllerOptions(namespace=namespace, workers=2, resync_seconds=resync_seconds),
        )
        ready = asyncio.Event()
        running = asyncio.create_task(controller.run(ready), name="controller-under-test")
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([running, waiting], return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            waiting.cancel()
            running.result()
        try:
            yield ControllerEnv(kube=kube, controller=controller, namespace=namespace)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    finally:
        await kube.close()
