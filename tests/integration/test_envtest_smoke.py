"""The test apiserver (infra/envtest) really is a Kubernetes API server.

Checked against it: kubectl can talk to it, CRDs become Established, server-side apply
refuses a conflicting field manager, watches deliver changes, and RBAC and ServiceAccount
tokens are real.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.eventually import wait_until
from tests.kube_envtest import KubeAPIError, KubeAPIServer, start_kube_apiserver

WATCH_DEADLINE_S = 30.0


def _configmap(namespace: str, name: str, data: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        }
    )


def _poll_until_allowed(api: KubeAPIServer, path: str, token: str) -> Any:
    """GET `path` as `token` until RBAC allows it (a new binding takes a moment to apply)."""

    def read() -> Any:
        try:
            return api.request("GET", path, token=token)
        except KubeAPIError as err:
            if err.status != 403:
                raise
            return None

    return wait_until(
        read, f"GET {path} to be allowed", lambda answer: answer is not None, within=60.0
    )


@pytest.mark.kube
def test_kubectl_lists_the_default_namespace(kube_apiserver: KubeAPIServer) -> None:
    proc = kube_apiserver.kubectl("get", "ns", check=False)

    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert "default" in names, proc.stdout


@pytest.mark.kube
def test_a_custom_resource_definition_becomes_established_and_serves_its_kind(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    group = f"smoke{uuid.uuid4().hex[:8]}.fleetbus.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
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
    kube_apiserver.kubectl("create", "-f", "-", input=json.dumps(crd))

    # kubectl wait polls the condition until its own deadline.
    waited = kube_apiserver.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        f"crd/widgets.{group}",
        check=False,
    )
    assert waited.returncode == 0, waited.stderr

    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": kube_namespace},
        "spec": {"size": 3},
    }
    kube_apiserver.kubectl("create", "-f", "-", input=json.dumps(widget))
    got = json.loads(
        kube_apiserver.kubectl(
            "get", f"widgets.{group}", "w1", "-n", kube_namespace, "-o", "json"
        ).stdout
    )
    assert got["spec"] == {"size": 3}


@pytest.mark.kube
def test_a_conflicting_server_side_apply_from_a_second_field_manager_is_refused(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    first = _configmap(kube_namespace, "settings", {"color": "blue"})
    kube_apiserver.kubectl(
        "apply", "--server-side", "--field-manager=alpha", "-f", "-", input=first
    )

    second = _configmap(kube_namespace, "settings", {"color": "red"})
    refused = kube_apiserver.kubectl(
        "apply", "--server-side", "--field-manager=beta", "-f", "-", input=second, check=False
    )

    assert refused.returncode != 0, refused.stdout
    assert "conflict" in refused.stderr.lower(), refused.stderr
    live = json.loads(
        kube_apiserver.kubectl(
            "get", "cm", "settings", "-n", kube_namespace, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    assert live["data"] == {"color": "blue"}
    managers = {entry["manager"] for entry in live["metadata"]["managedFields"]}
    assert managers == {"alpha"}


@pytest.mark.kube
def test_a_conflicting_apply_patch_over_http_is_answered_with_409(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps/settings"
    apply_type = "application/apply-patch+yaml"
    body = json.loads(_configmap(kube_namespace, "settings", {"color": "blue"}))
    kube_apiserver.request("PATCH", path + "?fieldManager=alpha", body, content_type=apply_type)

    body["data"] = {"color": "red"}
    with pytest.raises(KubeAPIError) as refused:
        kube_apiserver.request("PATCH", path + "?fieldManager=beta", body, content_type=apply_type)
    assert refused.value.status == 409
    assert refused.value.json()["reason"] == "Conflict"

    forced = kube_apiserver.request(
        "PATCH", path + "?fieldManager=beta&force=true", body, content_type=apply_type
    )
    assert forced["data"] == {"color": "red"}


@pytest.mark.kube
def test_a_watch_from_a_listed_resource_version_sees_a_configmap_change(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    kube_apiserver.kubectl(
        "apply",
        "--server-side",
        "--field-manager=smoke",
        "-f",
        "-",
        input=_configmap(kube_namespace, "watched", {"step": "one"}),
    )
    listed = kube_apiserver.request("GET", base)
    version = listed["metadata"]["resourceVersion"]

    events: list[dict[str, Any]] = []
    with kube_apiserver.open(
        "GET",
        f"{base}?watch=true&resourceVersion={version}&timeoutSeconds={int(WATCH_DEADLINE_S)}",
        timeout=WATCH_DEADLINE_S,
    ) as stream:
        kube_apiserver.kubectl(
            "apply",
            "--server-side",
            "--field-manager=smoke",
            "-f",
            "-",
            input=_configmap(kube_namespace, "watched", {"step": "two"}),
        )
        deadline = time.monotonic() + WATCH_DEADLINE_S
        while time.monotonic() < deadline:
            line = stream.readline()
            if not line:
                break  # the server closed the watch (timeoutSeconds)
            event = json.loads(line)
            events.append(event)
            if event["type"] == "MODIFIED" and event["object"]["metadata"]["name"] == "watched":
                break

    modified = [e for e in events if e["type"] == "MODIFIED"]
    assert modified, f"no MODIFIED event in {events}"
    assert modified[-1]["object"]["data"] == {"step": "two"}
    assert all(e["type"] != "ADDED" for e in events), (
        "a watch from the list's version replayed ADDED"
    )


@pytest.mark.kube
def test_a_service_account_is_denied_by_rbac_until_a_role_binding_allows_it(
    kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    ns = kube_namespace
    kube_apiserver.kubectl("create", "serviceaccount", "robot", "-n", ns)
    token = kube_apiserver.create_token(ns, "robot")
    path = f"/api/v1/namespaces/{ns}/configmaps"

    with pytest.raises(KubeAPIError) as denied:
        kube_apiserver.request("GET", path, token=token)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{ns}:robot" in denied.value.json()["message"]

    kube_apiserver.kubectl(
        "create", "role", "read-cm", "--verb=get,list", "--resource=configmaps", "-n", ns
    )
    kube_apiserver.kubectl(
        "create",
        "rolebinding",
        "read-cm",
        "--role=read-cm",
        f"--serviceaccount={ns}:robot",
        "-n",
        ns,
    )
    # The RBAC authorizer reads bindings from a cache: give it a moment to see the new one.
    allowed = _poll_until_allowed(kube_apiserver, path, token)
    assert allowed["kind"] == "ConfigMapList"

    review = kube_apiserver.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {"namespace": ns, "verb": "delete", "resource": "configmaps"}
            },
        },
        token=token,
    )
    assert review["status"]["allowed"] is False


def test_a_missing_binary_fails_the_fixture_with_a_hint_to_run_make_envtest(
    tmp_path: Path,
) -> None:
    with pytest.raises(pytest.fail.Exception, match="make envtest"):
        start_kube_apiserver(tmp_path / "work", binary=tmp_path / "no-such-kube-envtest")
