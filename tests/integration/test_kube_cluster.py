"""The test cluster (kube-envtest in cluster mode) acts like a cluster.

kube-controller-manager, kube-scheduler and KWOK's simulated kubelets run beside the apiserver,
so what a real cluster does on its own happens here too: checked for a Deployment, Jobs that
succeed and fail, namespace deletion and garbage collection.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.eventually import wait_until
from tests.kube_envtest import (
    FAIL_ANNOTATION,
    KubeAPIServer,
    condition,
    get_or_none,
)

pytestmark = pytest.mark.kube


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def _job(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "run", "image": "busybox:1.36", "command": ["true"]}],
                },
            },
        },
    }


def _true_condition(api: KubeAPIServer, path: str, kind: str) -> dict[str, Any] | None:
    obj = get_or_none(api, path)
    found = condition(obj, kind)
    return obj if found is not None and found.get("status") == "True" else None


def test_a_deployment_becomes_available_with_its_pods_running_on_simulated_nodes(
    kube_cluster: KubeAPIServer, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    kube_cluster.request(
        "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", _deployment("web", 3)
    )

    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    deployment = wait_until(
        lambda: _true_condition(kube_cluster, path, "Available"), "Deployment web to be Available"
    )

    assert deployment["status"]["availableReplicas"] == 3
    pods = kube_cluster.request("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb")
    assert len(pods["items"]) == 3
    for pod in pods["items"]:
        assert pod["status"]["phase"] == "Running"
        assert pod["spec"]["nodeName"].startswith("kwok-node-")


def test_a_job_runs_its_pod_to_completion(
    kube_cluster: KubeAPIServer, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    kube_cluster.request("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", _job("migrate"))

    path = f"/apis/batch/v1/namespaces/{ns}/jobs/migrate"
    job = wait_until(
        lambda: _true_condition(kube_cluster, path, "Complete"), "Job migrate to be Complete"
    )

    assert job["status"]["succeeded"] == 1
    assert condition(job, "Failed") is None


def test_a_job_whose_pods_are_asked_to_fail_fails_with_the_job_controllers_reason(
    kube_cluster: KubeAPIServer, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    job = _job("broken", {FAIL_ANNOTATION: "exit 1: database unreachable"})
    kube_cluster.request("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)

    path = f"/apis/batch/v1/namespaces/{ns}/jobs/broken"
    failed = wait_until(lambda: _true_condition(kube_cluster, path, "Failed"), "Job broken to fail")

    assert failed["status"].get("succeeded", 0) == 0
    assert (condition(failed, "Failed") or {}).get("reason") == "BackoffLimitExceeded"
    pods = kube_cluster.request(
        "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=job-name%3Dbroken"
    )
    [pod] = pods["items"]
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1
    assert terminated["message"] == "exit 1: database unreachable"


def test_deleting_a_namespace_removes_it_with_everything_in_it(
    kube_cluster: KubeAPIServer, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    kube_cluster.request(
        "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", _deployment("api", 1)
    )
    wait_until(
        lambda: _true_condition(
            kube_cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/api", "Available"
        ),
        "Deployment api to be Available",
    )

    kube_cluster.request("DELETE", f"/api/v1/namespaces/{ns}")

    wait_until(
        lambda: get_or_none(kube_cluster, f"/api/v1/namespaces/{ns}") is None,
        f"namespace {ns} to be gone",
        within=120.0,
    )


def test_deleting_a_deployment_garbage_collects_its_replica_sets_and_pods(
    kube_cluster: KubeAPIServer, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    kube_cluster.request(
        "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", _deployment("cache", 2)
    )
    wait_until(
        lambda: _true_condition(
            kube_cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/cache", "Available"
        ),
        "Deployment cache to be Available",
    )

    kube_cluster.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/cache")

    def children_left() -> int:
        sets = kube_cluster.request("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets")
        pods = kube_cluster.request("GET", f"/api/v1/namespaces/{ns}/pods")
        return len(sets["items"]) + len(pods["items"])

    wait_until(
        lambda: children_left() == 0 or None, "the ReplicaSet and Pods of cache to be collected"
    )
