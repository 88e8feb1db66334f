"""Drift on a real apiserver: edits and deletions made with kubectl, seen through the watches.

With policy `correct` an edited field is reverted and a deleted object re-created; with `report`
the edit stays and is reported; an ignore path is left to whoever changes it. Every detection
and correction shows in the Step's status, in the Task's roll-up and as a Kubernetes Event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskset.model import DriftPolicy, ObjectRef, Step, Taskset
from tests.integration.controller_harness import (
    ControllerEnv,
    cluster_task,
    running_controller,
    unique,
)
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube


def configmap_taskset(name: str, namespace: str, policy: DriftPolicy) -> Taskset:
    return Taskset(
        name=name,
        namespace=namespace,
        drift_policy=policy,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "settings", "labels": {"app": "shop"}},
                    "data": {"mode": "fast", "level": "3"},
                }
            )
        ],
    )


SETTINGS = ObjectRef(api_version="v1", kind="ConfigMap", name="settings")


async def step_drift(env: ControllerEnv, taskset: str, ref: ObjectRef) -> dict[str, Any]:
    step = await env.step(taskset, "install", ref)
    drift: dict[str, Any] = (step.get("status") or {}).get("drift") or {}
    return drift


async def test_an_edited_field_is_reverted_and_reported(
    env: ControllerEnv, kube_apiserver: KubeAPIServer
) -> None:
    name = unique("edited")
    await env.publish(cluster_task(configmap_taskset(name, env.namespace, "correct")))
    await env.task_phase(name, "Ready")

    kube_apiserver.kubectl(
        "patch",
        "configmap",
        "settings",
        "-n",
        env.namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"data": {"mode": "slow"}}),
    )

    async def reverted() -> dict[str, Any] | None:
        live = await env.get("v1", "ConfigMap", "settings", env.namespace)
        return live if live and live["data"]["mode"] == "fast" else None

    await env.wait_for("the edit to be reverted", reverted)
    drift = await env.wait_for(
        "the correction in the Step's status",
        lambda: _when(step_drift(env, name, SETTINGS), lambda d: d.get("corrected") == 1),
    )
    assert drift["detected"] == 1
    assert drift["state"] == "Corrected"
    assert drift["fields"] == ["/data/mode"]
    assert drift.get("deleted", False) is False
    step_name = (await env.step(name, "install", SETTINGS))["metadata"]["name"]
    detected = await env.wait_for(
        "a DriftDetected event", lambda: env.events(step_name, "DriftDetected")
    )
    corrected = await env.wait_for(
        "a DriftCorrected event", lambda: env.events(step_name, "DriftCorrected")
    )
    assert detected[0]["type"] == "Warning"
    assert "/data/mode" in detected[0]["message"]
    assert corrected[0]["type"] == "Normal"
    task = await env.wait_for(
        "the Task to count the drift",
        lambda: _when(env.task(name), lambda t: t["status"]["drift"]["corrected"] == 1),
    )
    assert task["status"]["drift"] == {"detected": 1, "corrected": 1, "drifted": 0, "reported": 0}
    assert task["status"]["phase"] == "Ready"


async def test_a_deleted_object_is_created_again(
    env: ControllerEnv, kube_apiserver: KubeAPIServer
) -> None:
    name = unique("deleted")
    await env.publish(cluster_task(configmap_taskset(name, env.namespace, "correct")))
    await env.task_phase(name, "Ready")
    before = await env.get("v1", "ConfigMap", "settings", env.namespace)

    kube_apiserver.kubectl("delete", "configmap", "settings", "-n", env.namespace)

    async def recreated() -> dict[str, Any] | None:
        live = await env.get("v1", "ConfigMap", "settings", env.namespace)
        fresh = live and live["metadata"]["uid"] != before["metadata"]["uid"]
        return live if fresh else None

    again = await env.wait_for("the ConfigMap to be created again", recreated)
    assert again["data"] == {"mode": "fast", "level": "3"}
    drift = await env.wait_for(
        "the correction in the Step's status",
        lambda: _when(step_drift(env, name, SETTINGS), lambda d: d.get("corrected") == 1),
    )
    assert drift["deleted"] is True
    assert drift["detected"] == 1


async def test_with_policy_report_the_edit_stays_and_is_reported(
    env: ControllerEnv, kube_apiserver: KubeAPIServer
) -> None:
    name = unique("reported")
    await env.publish(cluster_task(configmap_taskset(name, env.namespace, "report")))
    await env.task_phase(name, "Ready")

    kube_apiserver.kubectl(
        "patch",
        "configmap",
        "settings",
        "-n",
        env.namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"data": {"level": "9"}}),
    )

    drift = await env.wait_for(
        "the drift in the Step's status",
        lambda: _when(step_drift(env, name, SETTINGS), lambda d: d.get("detected") == 1),
    )
    assert drift["state"] == "Drifted"
    assert drift["fields"] == ["/data/level"]
    assert drift.get("corrected", 0) == 0
    step_name = (await env.step(name, "install", SETTINGS))["metadata"]["name"]
    await env.wait_for("a DriftDetected event", lambda: env.events(step_name, "DriftDetected"))
    task = await env.wait_for(
        "the Task to count the drift",
        lambda: _when(env.task(name), lambda t: t["status"]["drift"]["drifted"] == 1),
    )
    assert task["status"]["drift"]["corrected"] == 0
    live = await env.get("v1", "ConfigMap", "settings", env.namespace)
    assert live["data"]["level"] == "9"
    assert await env.events(step_name, "DriftCorrected") == []

    assert env.controller is not None
    env.controller.resync()
    await env.wait_for("the resync pass to finish", lambda: _idle(env))
    assert (await step_drift(env, name, SETTINGS))["detected"] == 1


async def test_an_ignore_path_is_left_alone_while_other_edits_are_reverted(
    cluster_env: ControllerEnv, kube_cluster: KubeAPIServer
) -> None:
    env = cluster_env
    name = unique("scaled")
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        ignore_paths=["/spec/replicas"],
        install=[
            Step(
                object={
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "api"},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": "api"}},
                        "template": {
                            "metadata": {"labels": {"app": "api"}},
                            "spec": {"containers": [{"name": "api", "image": "api:1"}]},
                        },
                    },
                }
            )
        ],
    )
    api = ObjectRef(api_version="apps/v1", kind="Deployment", name="api")
    await env.publish(cluster_task(taskset))
    await env.task_phase(name, "Ready")

    kube_cluster.kubectl("scale", "deployment", "api", "-n", env.namespace, "--replicas=5")
    kube_cluster.kubectl("set", "image", "deployment/api", "-n", env.namespace, "api=api:evil")

    async def image_reverted() -> dict[str, Any] | None:
        live = await env.get("apps/v1", "Deployment", "api", env.namespace)
        image = live["spec"]["template"]["spec"]["containers"][0]["image"]
        return live if image == "api:1" else None

    live = await env.wait_for("the image to be reverted", image_reverted)
    assert live["spec"]["replicas"] == 5

    async def correction_recorded() -> dict[str, Any] | None:
        drift = await step_drift(env, name, api)
        return drift if drift.get("corrected") else None

    drift = await env.wait_for("the correction in the Step's status", correction_recorded)
    assert drift["fields"] == ["/spec/template/spec/containers/0/image"]
    assert drift["corrected"] == 1


async def _when(value: Any, predicate: Any) -> Any:
    found = await value
    try:
        return found if found and predicate(found) else None
    except (KeyError, TypeError):
        return None


async def _idle(env: ControllerEnv) -> bool:
    return env.controller is not None and not env.controller.queue.busy()


async def test_a_deletion_while_the_controller_was_down_is_corrected_when_it_starts_again(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    name = unique("offline")
    async with running_controller(kube_apiserver.kubeconfig, kube_namespace) as first:
        await first.publish(cluster_task(configmap_taskset(name, kube_namespace, "correct")))
        await first.task_phase(name, "Ready")

    kube_apiserver.kubectl("delete", "configmap", "settings", "-n", kube_namespace)

    async with running_controller(kube_apiserver.kubeconfig, kube_namespace) as second:
        again = await second.exists("v1", "ConfigMap", "settings", kube_namespace)
        drift = await second.wait_for(
            "the correction in the Step's status",
            lambda: _when(step_drift(second, name, SETTINGS), lambda d: d.get("corrected") == 1),
        )
    assert again["data"] == {"mode": "fast", "level": "3"}
    assert drift["deleted"] is True


async def test_an_edit_by_another_manager_is_corrected_by_one_apply_without_read_or_dry_run(
    env: ControllerEnv, kube_apiserver: KubeAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The least work between the watch event and the correction: the watch's own object is
    the live one, and the managed fields prove the drift (a value of ours, now owned by the
    editor), so the controller neither reads the ConfigMap again nor dry-runs its apply."""
    name = unique("proven")
    await env.publish(cluster_task(configmap_taskset(name, env.namespace, "correct")))
    await env.task_phase(name, "Ready")
    calls: list[str] = []
    real_apply, real_get = env.kube.apply, env.kube.get

    async def apply(manifest: Any, **options: Any) -> dict[str, Any]:
        if (manifest.get("metadata") or {}).get("name") == "settings":
            calls.append("dry-run" if options.get("dry_run") else "apply")
        return await real_apply(manifest, **options)

    async def get(info: Any, object_name: str, namespace: str = "") -> dict[str, Any] | None:
        if object_name == "settings":
            calls.append("get")
        return await real_get(info, object_name, namespace)

    monkeypatch.setattr(env.kube, "apply", apply)
    monkeypatch.setattr(env.kube, "get", get)
    kube_apiserver.kubectl(
        "patch",
        "configmap",
        "settings",
        "-n",
        env.namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"data": {"level": "9"}}),
    )
    drift = await env.wait_for(
        "the correction in the Step's status",
        lambda: _when(step_drift(env, name, SETTINGS), lambda d: d.get("corrected") == 1),
    )
    assert drift["fields"] == ["/data/level"]
    assert calls == ["apply"], calls
    live = await env.get("v1", "ConfigMap", "settings", env.namespace)
    assert live is not None
    assert live["data"] == {"mode": "fast", "level": "3"}
