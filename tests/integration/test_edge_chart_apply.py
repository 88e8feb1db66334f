"""The fleetbus-edge chart's objects are valid Kubernetes objects: the real apiserver accepts them.

Every rendered object is server-side applied with `dryRun=All` (admission and validation run,
nothing is stored), in a fresh namespace standing for the release namespace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from access.nats_jwt import credentials_file, new_nkey
from access.pki import CertificateAuthority
from cluster_controller.kube import Kube
from fleetbus.bundle import EdgeSettings, helm_values
from tests.kube_envtest import KubeAPIServer
from tests.unit.test_edge_chart import render

pytestmark = pytest.mark.kube


SAMPLE_CREDENTIALS = credentials_file("JWT", new_nkey("user").seed)


@pytest.fixture
async def kube(kube_apiserver: KubeAPIServer) -> AsyncIterator[Kube]:
    client = Kube.connect(kube_apiserver.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("layout", "objects", "workload"),
    [
        ("single", 8, ("StatefulSet", "fleetbus-edge")),
        ("split", 12, ("StatefulSet", "fleetbus-edge-connector")),
    ],
)
async def test_every_object_the_chart_renders_passes_the_apiservers_validation(
    kube: Kube, kube_namespace: str, layout: str, objects: int, workload: tuple[str, str]
) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create(now)
    values = helm_values(
        EdgeSettings(cluster="edge-oslo", hub_urls=["wss://hub.example.com:443"]),
        ca.cert_pem,
        ca.issue_cluster("edge-oslo", now),
        SAMPLE_CREDENTIALS,
    )
    documents = render({**values, "layout": layout}, namespace=kube_namespace)

    accepted = []
    for document in documents:
        answer = await kube.apply(document, field_manager="helm-test", dry_run=True)
        accepted.append((answer["kind"], answer["metadata"]["name"]))

    assert len(accepted) == len(documents) == objects
    assert workload in accepted


async def test_the_metrics_services_and_scrape_rule_pass_the_apiservers_validation(
    kube: Kube, kube_namespace: str
) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create(now)
    values = helm_values(
        EdgeSettings(cluster="edge-oslo", hub_urls=["wss://hub.example.com:443"]),
        ca.cert_pem,
        ca.issue_cluster("edge-oslo", now),
        SAMPLE_CREDENTIALS,
    )
    values["layout"] = "split"
    values["serviceMonitor"] = {
        "enabled": True,
        "scrapeNamespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    }
    documents = render(values, namespace=kube_namespace)
    # The test cluster has no Prometheus Operator CRDs: the ServiceMonitor itself is checked by
    # rendering (tests/unit/test_edge_chart.py); everything else goes to the apiserver.
    kinds = [d["kind"] for d in documents]
    assert kinds.count("ServiceMonitor") == 1

    accepted = []
    for document in documents:
        if document["kind"] == "ServiceMonitor":
            continue
        answer = await kube.apply(document, field_manager="helm-test", dry_run=True)
        accepted.append((answer["kind"], answer["metadata"]["name"]))

    assert ("Service", "fleetbus-edge-connector-metrics") in accepted
    assert ("Service", "fleetbus-edge-controller-metrics") in accepted
    assert ("NetworkPolicy", "fleetbus-edge-deny-ingress") in accepted
    assert len(accepted) == 14
