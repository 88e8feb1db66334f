"""R6: the ServiceAccount a Step's Job runs as may touch its Step's object, and nothing else.

The real cluster controller, on the real kube-apiserver of `infra/envtest` (RBAC on), installs a
taskset whose init Step carries a Job. The test takes a token for the Job's generated
ServiceAccount (TokenRequest API) and tries, as that account, everything a Job should never do:
other kinds in its namespace (Secrets, Pods, Jobs, the controller's own Tasks and Steps), its
own kind in other namespaces, cluster-scoped resources, and granting itself more (Roles,
RoleBindings, tokens). Every denial is a real 403 from the apiserver, and each is paired with
the same kind of request on the Step's own object succeeding, so the matrix cannot pass because
the token simply does not work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from taskset.model import ObjectRef, Step, Taskset
from tests.faults.harness import record_figures
from tests.integration.controller_harness import (
    ControllerEnv,
    cluster_task,
    unique,
)
from tests.kube_envtest import KubeAPIError, KubeAPIServer

pytestmark = pytest.mark.kube

SEED_JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "seed"},
    "spec": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "seed", "image": "busybox", "command": ["true"]}],
            }
        }
    },
}


@dataclass
class StepAccount:
    kube: KubeAPIServer
    namespace: str
    """The Step's namespace, where its ConfigMap and its Job live."""
    other_namespace: str
    name: str
    token: str

    def as_account(self, method: str, path: str, body: object | None = None) -> int:
        """The HTTP status the apiserver answers this account with."""
        try:
            self.kube.request(method, path, body, token=self.token)
        except KubeAPIError as e:
            return e.status
        return 200


@pytest.fixture
async def step_account(env: ControllerEnv, kube_apiserver: KubeAPIServer) -> StepAccount:
    other = f"other-{uuid.uuid4().hex[:8]}"
    kube_apiserver.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
    )
    kube_apiserver.request(
        "POST",
        f"/api/v1/namespaces/{other}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "theirs"},
            "data": {"k": "v"},
        },
    )
    kube_apiserver.request(
        "POST",
        f"/api/v1/namespaces/{env.namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "neighbour"},
            "stringData": {"k": "v"},
        },
    )
    name = unique("seeded")
    seed = ObjectRef(api_version="v1", kind="ConfigMap", name="seed-input", namespace=env.namespace)
    taskset = Taskset(
        name=name,
        namespace=env.namespace,
        init=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "seed-input", "namespace": env.namespace},
                    "data": {"rows": "42"},
                },
                job=SEED_JOB,
            )
        ],
    )
    await env.publish(cluster_task(taskset))
    await env.step_job_name(name, "init", seed)
    step = await env.step(name, "init", seed)
    account = str(step["status"]["serviceAccount"])
    token = kube_apiserver.create_token(env.namespace, account)
    return StepAccount(kube_apiserver, env.namespace, other, account, token)


def denied_requests(account: StepAccount) -> list[tuple[str, str, str, Any]]:
    """(what, method, path, body) of everything the Step's Job must be refused."""
    ns, other = account.namespace, account.other_namespace
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planted"}}
    return [
        ("read a Secret next to it", "GET", f"/api/v1/namespaces/{ns}/secrets/neighbour", None),
        ("list Secrets next to it", "GET", f"/api/v1/namespaces/{ns}/secrets", None),
        ("list Pods next to it", "GET", f"/api/v1/namespaces/{ns}/pods", None),
        (
            "start another Job",
            "POST",
            f"/apis/batch/v1/namespaces/{ns}/jobs",
            {**SEED_JOB, "metadata": {"name": "more"}},
        ),
        (
            "read the controller's Tasks",
            "GET",
            f"/apis/fleetbus.io/v1alpha1/namespaces/{ns}/tasks",
            None,
        ),
        (
            "read the controller's Steps",
            "GET",
            f"/apis/fleetbus.io/v1alpha1/namespaces/{ns}/steps",
            None,
        ),
        ("list ServiceAccounts", "GET", f"/api/v1/namespaces/{ns}/serviceaccounts", None),
        (
            "mint a token for itself",
            "POST",
            f"/api/v1/namespaces/{ns}/serviceaccounts/{account.name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        ),
        (
            "grant itself a Role",
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "more"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            },
        ),
        (
            "bind itself to admin",
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "more"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": account.name, "namespace": ns}],
            },
        ),
        (
            "widen its own Role",
            "PATCH",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{account.name}",
            None,
        ),
        (
            "read a ConfigMap in another namespace",
            "GET",
            f"/api/v1/namespaces/{other}/configmaps/theirs",
            None,
        ),
        (
            "list ConfigMaps in another namespace",
            "GET",
            f"/api/v1/namespaces/{other}/configmaps",
            None,
        ),
        (
            "create a ConfigMap in another namespace",
            "POST",
            f"/api/v1/namespaces/{other}/configmaps",
            configmap,
        ),
        (
            "delete a ConfigMap in another namespace",
            "DELETE",
            f"/api/v1/namespaces/{other}/configmaps/theirs",
            None,
        ),
        ("list ConfigMaps of every namespace", "GET", "/api/v1/configmaps", None),
        ("list Namespaces", "GET", "/api/v1/namespaces", None),
        (
            "create a Namespace",
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "planted"}},
        ),
        ("list Nodes", "GET", "/api/v1/nodes", None),
        ("list ClusterRoles", "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", None),
        ("list CRDs", "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", None),
    ]


async def test_a_step_jobs_account_is_denied_everything_but_its_steps_object(
    step_account: StepAccount,
) -> None:
    ns = step_account.namespace
    own = f"/api/v1/namespaces/{ns}/configmaps"
    assert step_account.as_account("GET", f"{own}/seed-input") == 200
    assert step_account.as_account("GET", own) == 200
    planted = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "job-output"}}
    assert step_account.as_account("POST", own, planted) == 200
    assert step_account.as_account("DELETE", f"{own}/job-output") == 200

    allowed = []
    for what, method, path, body in denied_requests(step_account):
        status = step_account.as_account(method, path, body)
        if status != 403:
            allowed.append(f"{what}: {method} {path} -> {status}")
    assert not allowed, "the Step's account may:\n" + "\n".join(allowed)
    record_figures(
        "R6 Step Job ServiceAccount",
        denied=len(denied_requests(step_account)),
        allowed_own=4,
        leaks=0,
    )
