"""A whole taskset through the cluster controller on a real apiserver: order, readiness, roll-up.

The taskset has an init Step with a Job, an install phase with a fleetbus Namespace (quota and
network policy), a CRD and a custom resource of it, a Deployment and a Service, and a
postInstall Step. It runs on the acting test cluster: the Job and the Deployment's pods are
held by the simulated kubelet until the test releases them, so the test can check at each point
that nothing of a later phase or stage exists before the real controllers report them done.
"""

from __future__ import annotations

from typing import Any

import pytest

from kube_contract.resources import EVENT
from taskset.model import HookInfo, ObjectRef, Step, Taskset
from tests.integration.controller_harness import (
    HOLD,
    POD,
    ControllerEnv,
    cluster_task,
    unique,
)
from tests.kube_envtest import FAIL_ANNOTATION

pytestmark = pytest.mark.kube


@pytest.fixture
def env(cluster_env: ControllerEnv) -> ControllerEnv:
    """Every test of this module runs on the acting test cluster."""
    return cluster_env


def crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def deployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": HOLD},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def full_taskset(name: str, system: str, app: str, group: str) -> Taskset:
    seed_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "seed"},
        "spec": {
            "template": {
                "metadata": {"annotations": HOLD},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "seed", "image": "busybox", "command": ["true"]}],
                },
            }
        },
    }
    return Taskset(
        name=name,
        namespace=app,
        init=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "seed-input", "namespace": system},
                    "data": {"rows": "42"},
                },
                job=seed_job,
            )
        ],
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
                }
            ),
            Step(object=deployment(app)),
            Step(
                object={
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w1"},
                    "spec": {"size": 3},
                }
            ),
            Step(object=crd(group)),
            Step(
                object={
                    "apiVersion": "fleetbus.io/v1alpha1",
                    "kind": "Namespace",
                    "metadata": {"name": app},
                    "spec": {
                        "labels": {"team": "web"},
                        "resourceQuota": {"hard": {"pods": "20"}},
                        "networkPolicies": [
                            {
                                "name": "deny-ingress",
                                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
                            }
                        ],
                    },
                }
            ),
        ],
        post_install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "smoke-result"},
                    "data": {"ok": "true"},
                }
            )
        ],
    )


async def test_a_taskset_is_applied_phase_by_phase_and_stage_by_stage(env: ControllerEnv) -> None:
    name = unique("shop")
    app = unique("shop-app")
    group = f"{unique('g')}.fleetbus.test"
    taskset = full_taskset(name, env.namespace, app, group)
    seed = ObjectRef(api_version="v1", kind="ConfigMap", name="seed-input", namespace=env.namespace)

    await env.publish(cluster_task(taskset))

    job = await env.step_job_name(name, "init", seed)
    assert await env.get("batch/v1", "Job", job, env.namespace) is not None
    account = await env.get(
        "v1",
        "ServiceAccount",
        job and ((await env.step(name, "init", seed))["status"]["serviceAccount"]),
        env.namespace,
    )
    assert account is not None
    init_status = await env.task_phase(name, "Progressing")
    assert init_status["currentPhase"] == "init"
    assert await env.get("fleetbus.io/v1alpha1", "Namespace", app) is None
    assert await env.get("fleetbus.io/v1alpha1", "Tasklet", name, env.namespace) is None

    await env.release_when_running(env.namespace, f"job-name={job}")

    fleet_namespace = await env.exists("fleetbus.io/v1alpha1", "Namespace", app)
    assert fleet_namespace["metadata"]["name"] == app
    await env.exists("apiextensions.k8s.io/v1", "CustomResourceDefinition", f"widgets.{group}")
    web = await env.exists("apps/v1", "Deployment", "web", app)
    assert web["metadata"]["labels"]["fleetbus.io/task"] == name
    await env.exists("v1", "Service", "web", app)
    widget = await env.exists(f"{group}/v1", "Widget", "w1", app)
    assert widget["spec"] == {"size": 3}
    quota = await env.get("v1", "ResourceQuota", "fleetbus-quota", app)
    assert quota["spec"]["hard"] == {"pods": "20"}
    policy = await env.get("networking.k8s.io/v1", "NetworkPolicy", "deny-ingress", app)
    assert policy["spec"]["policyTypes"] == ["Ingress"]

    waiting = await env.wait_for(
        "the Task to wait for the Deployment",
        lambda: _waiting_on(env, name, "Deployment/"),
    )
    assert waiting["currentPhase"] == "install"
    assert await env.get("v1", "ConfigMap", "smoke-result", app) is None

    await env.release_when_running(app, "app=web", count=2)

    await env.exists("v1", "ConfigMap", "smoke-result", app)
    status = await env.task_phase(name, "Ready")
    assert status["steps"] == {"total": 7, "ready": 7, "failed": 0}
    assert status["progress"] == "7/7"
    assert status["digest"] == cluster_task(taskset).digest
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    tasklet = await env.get("fleetbus.io/v1alpha1", "Tasklet", name, env.namespace)
    assert tasklet["status"]["phase"] == "Ready"
    assert tasklet["status"]["phases"]["postInstall"] == {"total": 1, "ready": 1, "failed": 0}
    assert tasklet["metadata"]["ownerReferences"][0]["kind"] == "Task"
    namespace_status = (await env.get("fleetbus.io/v1alpha1", "Namespace", app))["status"]
    assert namespace_status["phase"] == "Ready"
    assert namespace_status["parts"]["resourceQuota"]["ready"] is True
    assert namespace_status["parts"]["networkPolicies"] == {
        "ready": True,
        "count": 1,
        "message": "1/1 ready",
    }
    seed_step = await env.step(name, "init", seed)
    assert seed_step["status"]["phase"] == "Ready"
    assert seed_step["status"]["job"]["state"] == "Complete"
    job_live = await env.get("batch/v1", "Job", job, env.namespace)
    assert job_live["status"]["succeeded"] == 1
    [pod] = (
        await env.kube.list(POD, namespace=env.namespace, label_selector=f"job-name={job}")
    ).items
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["serviceAccountName"] == seed_step["status"]["serviceAccount"]


async def _waiting_on(env: ControllerEnv, task: str, what: str) -> dict[str, Any] | None:
    found = await env.task(task)
    status = (found or {}).get("status") or {}
    return status if what in str(status.get("message", "")) else None


async def test_a_failing_init_job_fails_the_task_with_its_reason(env: ControllerEnv) -> None:
    name = unique("broken")
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        init=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name},
                    "data": {},
                },
                job={
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": "x"},
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "metadata": {"annotations": {FAIL_ANNOTATION: "seed data missing"}},
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "x", "image": "busybox"}],
                            },
                        },
                    },
                },
            )
        ],
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"{name}-never"},
                    "data": {},
                }
            )
        ],
    )
    ref = ObjectRef(api_version="v1", kind="ConfigMap", name=name)

    await env.publish(cluster_task(taskset))

    status = await env.task_phase(name, "Failed")
    assert status["currentPhase"] == "init"
    assert status["failedObject"] == f"ConfigMap/{env.namespace}/{name}"
    assert status["reason"] == "JobBackoffLimitExceeded"
    assert await env.get("v1", "ConfigMap", f"{name}-never", env.namespace) is None
    job = (await env.step(name, "init", ref))["status"]["job"]
    assert job["state"] == "Failed"


async def test_an_object_the_apiserver_rejects_fails_its_step(env: ControllerEnv) -> None:
    name = unique("invalid")
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "bad"},
                    "spec": {"ports": [{"port": 70000}]},
                }
            )
        ],
    )

    await env.publish(cluster_task(taskset))

    status = await env.task_phase(name, "Failed")
    assert status["reason"] == "ApplyRejected"
    assert "Service/" in status["failedObject"]
    assert "70000" in status["message"] or "port" in status["message"]


async def test_a_new_version_replaces_objects_and_prunes_what_it_dropped(
    env: ControllerEnv,
) -> None:
    name = unique("upgrade")

    def configmaps(*names: str) -> Taskset:
        return Taskset(
            name=name,
            namespace=env.namespace,
            install=[
                Step(
                    object={
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": n},
                        "data": {"version": "2" if n == "kept" else "1"},
                    }
                )
                for n in names
            ],
        )

    await env.publish(cluster_task(configmaps("kept", "dropped")))
    await env.task_phase(name, "Ready")
    dropped_step = await env.step(
        name,
        "install",
        ObjectRef(api_version="v1", kind="ConfigMap", name="dropped", namespace=""),
    )

    second = cluster_task(configmaps("kept", "added"), generation=2, version=2)
    await env.publish(second)

    await env.exists("v1", "ConfigMap", "added", env.namespace)
    await env.gone("v1", "ConfigMap", "dropped", env.namespace)
    await env.gone("fleetbus.io/v1alpha1", "Step", dropped_step["metadata"]["name"], env.namespace)

    async def ready_for_v2() -> dict[str, Any] | None:
        task = await env.task(name)
        status = (task or {}).get("status") or {}
        return status if status.get("phase") == "Ready" and status.get("version") == 2 else None

    status = await env.wait_for("version 2 to be Ready", ready_for_v2)
    assert status["digest"] == second.digest
    assert status["steps"]["total"] == 2


async def test_a_large_taskset_is_spread_over_steps_none_near_the_etcd_limit(
    env: ControllerEnv,
) -> None:
    name = unique("bulk")
    payload = "x" * 20_000
    count = 120
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"{name}-{i}"},
                    "data": {"blob": payload},
                }
            )
            for i in range(count)
        ],
    )

    await env.publish(cluster_task(taskset))

    status = await env.task_phase(name, "Ready")
    assert status["steps"]["ready"] == count
    task = await env.task(name)
    assert task is not None
    assert len(str(task)) < 100_000
    assert count * len(payload) > 1_500_000


async def test_hook_objects_deleted_on_success_stay_until_every_hook_of_the_phase_succeeded(
    env: ControllerEnv,
) -> None:
    """Helm deletes `hook-succeeded` hooks after all hooks of the event succeeded, and a Job
    with `ttlSecondsAfterFinished: 0` is gone the moment it finishes (ingress-nginx's
    admission Jobs are both)."""
    name = unique("hooked")
    succeeded = HookInfo(events=["pre-install"], delete_policy=["hook-succeeded"])
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "make-cert"},
        "spec": {
            "ttlSecondsAfterFinished": 0,
            "template": {
                "spec": {
                    "serviceAccountName": "cert-maker",
                    "restartPolicy": "OnFailure",
                    "containers": [{"name": "make", "image": "certgen:1.6"}],
                }
            },
        },
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cert-maker"}}
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        init=[
            Step(object=account, hook=succeeded),
            Step(object=job, hook=succeeded, wait="complete"),
        ],
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"{name}-after"},
                    "data": {},
                }
            )
        ],
    )

    await env.publish(cluster_task(taskset))

    status = await env.task_phase(name, "Ready")
    assert status["steps"] == {"total": 3, "ready": 3, "failed": 0}
    assert await env.get("v1", "ConfigMap", f"{name}-after", env.namespace) is not None
    await env.gone("v1", "ServiceAccount", "cert-maker", env.namespace)
    assert await env.get("batch/v1", "Job", "make-cert", env.namespace) is None
    ran = await env.kube.list(EVENT, namespace=env.namespace)
    assert any(
        e.get("reason") == "Completed" and e["involvedObject"]["name"] == "make-cert"
        for e in ran.items
    )
