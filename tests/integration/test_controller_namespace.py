"""The fleetbus Namespace on a real apiserver: a namespace and its parts, kept together.

Created with its ResourceQuota, LimitRange, NetworkPolicies and RBAC; status says which parts
are ready; a part dropped from the spec is deleted, a part deleted behind the controller's back
comes back; deleting the fleetbus Namespace removes the parts and the namespace.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kube_contract.resources import FLEETBUS_NAMESPACE
from tests.integration.controller_harness import ControllerEnv, unique
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube


def fleet_namespace(name: str, policies: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "fleetbus.io/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "spec": {
            "labels": {"team": "payments"},
            "resourceQuota": {"hard": {"pods": "10", "requests.cpu": "4"}},
            "limitRange": {
                "limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "500m"},
                        "defaultRequest": {"cpu": "100m"},
                    }
                ]
            },
            "networkPolicies": [
                {"name": policy, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
                for policy in policies
            ],
            "rbac": {
                "roles": [
                    {
                        "name": "reader",
                        "rules": [
                            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
                        ],
                    }
                ],
                "roleBindings": [
                    {
                        "name": "readers",
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Role",
                            "name": "reader",
                        },
                        "subjects": [
                            {
                                "kind": "Group",
                                "name": "payments-devs",
                                "apiGroup": "rbac.authorization.k8s.io",
                            }
                        ],
                    }
                ],
            },
        },
    }


async def ready_status(env: ControllerEnv, name: str, generation: int = 1) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        live = await env.get("fleetbus.io/v1alpha1", "Namespace", name)
        status = (live or {}).get("status") or {}
        done = status.get("phase") == "Ready" and status.get("observedGeneration") == generation
        return status if done else None

    return await env.wait_for(f"Namespace {name} to be Ready", check)


async def test_a_namespace_is_created_with_all_its_parts_and_says_which_are_ready(
    env: ControllerEnv,
) -> None:
    name = unique("payments")

    await env.kube.apply(
        fleet_namespace(name, ["deny-all", "allow-dns"]),
        field_manager="test",
        info=FLEETBUS_NAMESPACE,
    )

    status = await ready_status(env, name)
    parts = status["parts"]
    assert parts["namespace"]["ready"] is True
    assert parts["resourceQuota"]["ready"] is True
    assert parts["limitRange"]["ready"] is True
    assert parts["networkPolicies"] == {"ready": True, "count": 2, "message": "2/2 ready"}
    assert parts["rbac"]["count"] == 2
    core = await env.get("v1", "Namespace", name)
    assert core["metadata"]["labels"]["team"] == "payments"
    assert core["status"]["phase"] == "Active"
    limits = await env.get("v1", "LimitRange", "fleetbus-limits", name)
    assert limits["spec"]["limits"][0]["default"] == {"cpu": "500m"}
    binding = await env.get("rbac.authorization.k8s.io/v1", "RoleBinding", "readers", name)
    assert binding["roleRef"]["name"] == "reader"


async def test_parts_follow_the_spec_and_come_back_when_deleted(
    env: ControllerEnv, kube_apiserver: KubeAPIServer
) -> None:
    name = unique("ledger")
    await env.kube.apply(
        fleet_namespace(name, ["deny-all", "allow-dns"]),
        field_manager="test",
        info=FLEETBUS_NAMESPACE,
    )
    await ready_status(env, name)

    await env.kube.apply(
        fleet_namespace(name, ["deny-all"]), field_manager="test", info=FLEETBUS_NAMESPACE
    )
    await env.gone("networking.k8s.io/v1", "NetworkPolicy", "allow-dns", name)
    status = await ready_status(env, name, generation=2)
    assert status["parts"]["networkPolicies"]["count"] == 1

    before = await env.get("v1", "ResourceQuota", "fleetbus-quota", name)
    kube_apiserver.kubectl("delete", "resourcequota", "fleetbus-quota", "-n", name)

    async def recreated() -> dict[str, Any] | None:
        live = await env.get("v1", "ResourceQuota", "fleetbus-quota", name)
        fresh = live and live["metadata"]["uid"] != before["metadata"]["uid"]
        return live if fresh else None

    again = await env.wait_for("the quota to come back", recreated)
    assert again["spec"]["hard"] == {"pods": "10", "requests.cpu": "4"}

    kube_apiserver.kubectl(
        "patch",
        "limitrange",
        "fleetbus-limits",
        "-n",
        name,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"limits": [{"type": "Container", "default": {"cpu": "8"}}]}}),
    )

    async def limits_restored() -> dict[str, Any] | None:
        live = await env.get("v1", "LimitRange", "fleetbus-limits", name)
        default = live["spec"]["limits"][0].get("default", {})
        return live if default == {"cpu": "500m"} else None

    await env.wait_for("the edited limits to be restored", limits_restored)


async def test_deleting_a_namespace_removes_its_parts_and_the_namespace(
    env: ControllerEnv,
) -> None:
    name = unique("retired")
    await env.kube.apply(
        fleet_namespace(name, ["deny-all"]), field_manager="test", info=FLEETBUS_NAMESPACE
    )
    await ready_status(env, name)

    await env.kube.delete(FLEETBUS_NAMESPACE, name)

    await env.gone("fleetbus.io/v1alpha1", "Namespace", name)
    assert await env.get("v1", "ResourceQuota", "fleetbus-quota", name) is None
    assert await env.get("networking.k8s.io/v1", "NetworkPolicy", "deny-all", name) is None
    assert await env.get("rbac.authorization.k8s.io/v1", "Role", "reader", name) is None
    core = await env.get("v1", "Namespace", name)
    assert core is None or core["metadata"].get("deletionTimestamp")


async def test_an_invalid_part_fails_the_namespace_with_the_apiservers_reason(
    env: ControllerEnv,
) -> None:
    name = unique("broken-quota")
    manifest = fleet_namespace(name, [])
    manifest["spec"]["resourceQuota"] = {"hard": {"pods": "not-a-number"}}

    await env.kube.apply(manifest, field_manager="test", info=FLEETBUS_NAMESPACE)

    async def failed() -> dict[str, Any] | None:
        live = await env.get("fleetbus.io/v1alpha1", "Namespace", name)
        status = (live or {}).get("status") or {}
        return status if status.get("phase") == "Failed" else None

    status = await env.wait_for("the Namespace to fail", failed)
    assert status["reason"] == "PartRejected"
    assert "ResourceQuota" in status["message"]
    assert status["parts"]["resourceQuota"]["ready"] is False
