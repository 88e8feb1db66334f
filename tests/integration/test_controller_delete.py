"""Deleting a Task on the acting test cluster: preDelete first, then every object, explicitly.

The controller does not count on the garbage collector (the objects it applied carry no owner
references to the Task): the Tasklet, the objects, the Step resources and the fleetbus
Namespace's parts are all deleted by the controller itself, the preDelete Job really runs (held
by the simulated kubelet until the test releases it), the Task goes only after all of that, and
the namespace controller then really removes the namespace.
"""

from __future__ import annotations

from typing import Any

import pytest

from kube_contract.resources import STEP, TASK
from taskset.model import Step, Taskset
from tests.integration.controller_harness import (
    HOLD,
    ControllerEnv,
    cluster_task,
    unique,
)
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube


@pytest.fixture
def env(cluster_env: ControllerEnv) -> ControllerEnv:
    """Every test of this module runs on the acting test cluster."""
    return cluster_env


def cleanup_job(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "backup-before-delete", "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"annotations": HOLD},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "backup", "image": "busybox", "command": ["true"]}],
                },
            }
        },
    }


async def test_deleting_a_task_runs_pre_delete_then_removes_everything(
    env: ControllerEnv,
) -> None:
    name = unique("removed")
    app = unique("removed-app")
    taskset = Taskset(
        name=name,
        namespace=app,
        install=[
            Step(
                object={
                    "apiVersion": "fleetbus.io/v1alpha1",
                    "kind": "Namespace",
                    "metadata": {"name": app},
                    "spec": {"resourceQuota": {"hard": {"pods": "5"}}},
                }
            ),
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "conf"},
                    "data": {"k": "v"},
                }
            ),
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "svc"},
                    "spec": {"ports": [{"port": 80}]},
                }
            ),
        ],
        pre_delete=[Step(object=cleanup_job(env.namespace), wait="complete")],
    )
    await env.publish(cluster_task(taskset))
    await env.task_phase(name, "Ready")
    assert await env.get("batch/v1", "Job", "backup-before-delete", env.namespace) is None

    await env.kube.delete(TASK, name, namespace=env.namespace)

    await env.exists("batch/v1", "Job", "backup-before-delete", env.namespace)
    deleting = await env.task_phase(name, "Deleting")
    assert deleting["currentPhase"] == "preDelete"
    assert await env.get("v1", "ConfigMap", "conf", app) is not None
    assert await env.get("fleetbus.io/v1alpha1", "Tasklet", name, env.namespace) is not None

    await env.release_when_running(env.namespace, "job-name=backup-before-delete")

    await env.gone("fleetbus.io/v1alpha1", "Task", name, env.namespace)
    assert await env.get("fleetbus.io/v1alpha1", "Tasklet", name, env.namespace) is None
    assert await env.get("v1", "ConfigMap", "conf", app) is None
    assert await env.get("v1", "Service", "svc", app) is None
    assert await env.get("v1", "ResourceQuota", "fleetbus-quota", app) is None
    assert await env.get("fleetbus.io/v1alpha1", "Namespace", app) is None
    assert await env.get("batch/v1", "Job", "backup-before-delete", env.namespace) is None
    await env.gone("v1", "Namespace", app)
    steps = await env.kube.list(
        STEP, namespace=env.namespace, label_selector=f"fleetbus.io/task={name}"
    )
    assert steps.items == []


async def test_deleting_a_task_that_never_finished_still_cleans_up(
    env: ControllerEnv,
) -> None:
    name = unique("halfway")
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name},
                    "data": {},
                }
            ),
            Step(
                object={
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {
                        "selector": {"matchLabels": {"app": name}},
                        "template": {
                            "metadata": {"labels": {"app": name}},
                            "spec": {"containers": [{"name": "c", "image": "never:ready"}]},
                        },
                    },
                }
            ),
        ],
    )
    await env.publish(cluster_task(taskset))
    await env.exists("apps/v1", "Deployment", name, env.namespace)

    await env.kube.delete(TASK, name, namespace=env.namespace)

    await env.gone("fleetbus.io/v1alpha1", "Task", name, env.namespace)
    assert await env.get("apps/v1", "Deployment", name, env.namespace) is None
    assert await env.get("v1", "ConfigMap", name, env.namespace) is None


async def test_an_object_released_from_fleetbus_under_policy_report_is_left_in_place(
    env: ControllerEnv, kube_cluster: KubeAPIServer
) -> None:
    name = unique("released")
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        drift_policy="report",
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name},
                    "data": {"a": "1"},
                }
            )
        ],
    )
    await env.publish(cluster_task(taskset))
    await env.task_phase(name, "Ready")
    kube_cluster.kubectl(
        "label",
        "configmap",
        name,
        "-n",
        env.namespace,
        "fleetbus.io/step-",
        "--overwrite",
    )

    await env.kube.delete(TASK, name, namespace=env.namespace)

    await env.gone("fleetbus.io/v1alpha1", "Task", name, env.namespace)
    kept: Any = await env.get("v1", "ConfigMap", name, env.namespace)
    assert kept is not None
    assert kept["data"] == {"a": "1"}
