"""The fleetbus-edge chart installs for real: a Helm release on the acting test cluster.

Installed through Helm's own engine (helm_python) with the values a registration writes, its one
edge StatefulSet (leaf, connector and controller in one pod) is scheduled onto a simulated node
and becomes Ready, Helm's own wait says the release is deployed, and an uninstall leaves nothing
of it behind.
The connector runs without persistence here: the test cluster has no storage provisioner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helm_python import Config

from access.nats_jwt import credentials_file, new_nkey
from access.pki import CertificateAuthority
from fleetbus.bundle import EdgeSettings, helm_values
from tests.eventually import wait_until
from tests.kube_envtest import KubeAPIServer, condition, unique_namespace_name

pytestmark = pytest.mark.kube

CHART = Path(__file__).resolve().parents[2] / "ops" / "charts" / "fleetbus-edge"
RELEASE = "fleetbus-edge"


SAMPLE_CREDENTIALS = credentials_file("JWT", new_nkey("user").seed)


def registration_values(cluster: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create(now)
    values = helm_values(
        EdgeSettings(cluster=cluster, hub_urls=["tls://hub.example.com:443"]),
        ca.cert_pem,
        ca.issue_cluster(cluster, now),
        SAMPLE_CREDENTIALS,
    )
    values.setdefault("connector", {})["persistence"] = {"enabled": False}
    return values


def workloads(api: KubeAPIServer, namespace: str) -> set[tuple[str, str]]:
    """The Deployments and StatefulSets in the namespace, as (kind, name)."""
    found: set[tuple[str, str]] = set()
    for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets")):
        listing = api.request("GET", f"/apis/apps/v1/namespaces/{namespace}/{plural}")
        found.update((kind, item["metadata"]["name"]) for item in listing["items"])
    return found


def test_the_edge_chart_installs_as_a_helm_release_whose_pods_become_ready_and_uninstalls_cleanly(
    kube_cluster: KubeAPIServer,
) -> None:
    namespace = unique_namespace_name("fleetbus-system")
    with Config(kubeconfig_path=str(kube_cluster.kubeconfig), namespace=namespace) as helm:
        release = helm.install(
            str(CHART),
            RELEASE,
            registration_values("edge-lab"),
            namespace=namespace,
            create_namespace=True,
            wait="watcher",
            timeout=240,
        )

        assert release["status"] == "deployed"
        assert workloads(kube_cluster, namespace) == {("StatefulSet", "fleetbus-edge")}
        pods = kube_cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
        assert len(pods) == 1
        for pod in pods:
            assert pod["spec"]["nodeName"].startswith("kwok-node-")
            assert (condition(pod, "Ready") or {}).get("status") == "True"

        helm.uninstall(RELEASE, wait="watcher", timeout=120)

        assert helm.list() == []

    def nothing_left() -> bool:
        pods = kube_cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
        return not pods and not workloads(kube_cluster, namespace)

    wait_until(nothing_left, f"the release's workloads and pods in {namespace} to be gone")
    secrets = kube_cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets")["items"]
    assert [s["metadata"]["name"] for s in secrets if s["type"].startswith("helm.sh/")] == []
