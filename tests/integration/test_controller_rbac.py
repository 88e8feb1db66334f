"""A Step's Job runs as a ServiceAccount that can work on its object's kind in its namespace only.

Checked with the account's own token (TokenRequest API) against the real RBAC authorizer: a
SelfSubjectAccessReview and a plain request, in the Step's namespace and in another one.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskset.model import ObjectRef, Step, Taskset
from tests.integration.controller_harness import (
    ControllerEnv,
    cluster_task,
    unique,
)
from tests.kube_envtest import KubeAPIError, KubeAPIServer, create_namespace, unique_namespace_name

pytestmark = pytest.mark.kube


def can_i(api: KubeAPIServer, token: str, verb: str, resource: str, namespace: str) -> bool:
    review = api.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace}
            },
        },
        token=token,
    )
    allowed: bool = review["status"]["allowed"]
    return allowed


async def test_a_step_job_account_is_denied_outside_its_namespace(
    env: ControllerEnv, kube_apiserver: KubeAPIServer
) -> None:
    other = unique_namespace_name("elsewhere")
    create_namespace(kube_apiserver, other)
    name = unique("migrate")
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        init=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "schema"},
                    "data": {"version": "7"},
                },
                job={
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": "migrate"},
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "migrate", "image": "busybox"}],
                            }
                        }
                    },
                },
            )
        ],
    )
    ref = ObjectRef(api_version="v1", kind="ConfigMap", name="schema")
    await env.publish(cluster_task(taskset))
    job_name = await env.step_job_name(name, "init", ref)
    step = await env.step(name, "init", ref)
    account = step["status"]["serviceAccount"]
    job: Any = await env.get("batch/v1", "Job", job_name, env.namespace)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account

    token = kube_apiserver.create_token(env.namespace, account)

    async def granted() -> bool:
        return can_i(kube_apiserver, token, "get", "configmaps", env.namespace)

    assert await env.wait_for("the Role to be in effect", granted)
    assert can_i(kube_apiserver, token, "patch", "configmaps", env.namespace)
    assert not can_i(kube_apiserver, token, "get", "configmaps", other)
    assert not can_i(kube_apiserver, token, "get", "secrets", env.namespace)
    assert not can_i(kube_apiserver, token, "create", "rolebindings", env.namespace)
    with pytest.raises(KubeAPIError) as denied:
        kube_apiserver.request("GET", f"/api/v1/namespaces/{other}/configmaps", token=token)
    assert denied.value.status == 403
    allowed = kube_apiserver.request(
        "GET", f"/api/v1/namespaces/{env.namespace}/configmaps/schema", token=token
    )
    assert allowed["data"] == {"version": "7"}
