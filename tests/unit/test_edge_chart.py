"""The fleetbus-edge Helm chart, rendered and linted with the Helm engine (helm-python-sdk).

It is rendered with the values a real registration bundle carries (`fleetbus.bundle`), and the
rendered settings are read back the way the connector reads its bundle.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from helm_python import Chart, HelmValuesError, lint

from access.nats_jwt import credentials_file
from access.pki import CertificateAuthority
from cluster_controller.crds import CRD_FILES
from fleetbus.bundle import EdgeSettings, helm_values
from kube_http.kubeconfig import load_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "ops" / "charts" / "fleetbus-edge"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def bundle_values() -> dict[str, Any]:
    ca = CertificateAuthority.create(NOW)
    issued = ca.issue_cluster("edge-berlin", NOW)
    settings = EdgeSettings(
        cluster="edge-berlin",
        hub_urls=["tls://hub.example.com:443"],
        labels={"region": "eu"},
        inventory_interval=15.0,
    )
    return helm_values(settings, ca.cert_pem, issued, credentials_file("JWT", "SEED"))


def render(values: dict[str, Any], namespace: str = "fleetbus-system") -> list[dict[str, Any]]:
    chart = Chart.load(CHART)
    try:
        files = chart.render(values, name="fleetbus-edge", namespace=namespace, is_install=True)
    finally:
        chart.close()
    documents: list[dict[str, Any]] = []
    for path, text in files.items():
        if not path.endswith((".yaml", ".yml")):
            continue
        documents.extend(d for d in yaml.safe_load_all(text) if d)
    return documents


def find(documents: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    matches = [d for d in documents if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in matches]}"
    return matches[0]


def test_by_default_one_pod_runs_the_leaf_the_connector_and_the_controller(
    bundle_values: dict[str, Any],
) -> None:
    documents = render(bundle_values)

    kinds = sorted(d["kind"] for d in documents)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "StatefulSet",
            "NetworkPolicy",
        ]
    )
    edge = find(documents, "StatefulSet")
    assert edge["metadata"]["name"] == "fleetbus-edge"
    pod = edge["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:2] == ["edge", "--bundle=/etc/fleetbus/bundle"]
    assert "--kubeconfig=/etc/fleetbus/kube/config" in args
    assert "--controller-workers=4" in args
    assert "--resync=600" in args
    assert "--without-controller" not in args
    assert "--skip-crds" not in args
    assert "--leaf-memory-limit=32MiB" in args
    assert "--leaf-max-file-store=2560MiB" in args
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "20m", "memory": "72Mi"},
        "limits": {"memory": "160Mi"},
    }
    # The pod runs the controller: its ServiceAccount holds the controller's role.
    binding = find(documents, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fleetbus-edge", "namespace": "fleetbus-system"}
    ]
    assert pod["serviceAccountName"] == "fleetbus-edge"
    assert edge["spec"]["volumeClaimTemplates"][0]["spec"]["resources"] == {
        "requests": {"storage": "3Gi"}
    }
    values = {**bundle_values, "controller": {"manageCrds": False, "workers": 2}}
    args = find(render(values), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--skip-crds" in args
    assert "--controller-workers=2" in args


def test_the_split_layout_renders_controller_connector_rbac_and_bundle(
    bundle_values: dict[str, Any],
) -> None:
    documents = render({**bundle_values, "layout": "split"})

    kinds = sorted(d["kind"] for d in documents)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Deployment",
            "StatefulSet",
            "NetworkPolicy",
        ]
    )
    assert all(
        d["metadata"].get("namespace") == "fleetbus-system"
        for d in documents
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding")
    )
    controller = find(documents, "Deployment", "-controller")
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "controller"
    assert "--kubeconfig=/etc/fleetbus/kube/config" in args
    assert "--leader-elect" in args
    assert "--namespace=fleetbus-system" in args
    connector = find(documents, "StatefulSet", "-connector")
    pod = connector["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][:2] == ["edge", "--bundle=/etc/fleetbus/bundle"]
    assert "--without-controller" in pod["containers"][0]["args"]
    assert pod["containers"][0]["image"] == "ghcr.io/fleetbus/fleetbus-edge:0.1.0"
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "50m", "memory": "96Mi"}
    assert connector["spec"]["volumeClaimTemplates"][0]["spec"]["resources"] == {
        "requests": {"storage": "3Gi"}
    }
    secret = find(documents, "Secret")
    assert secret["stringData"]["cluster.key"] == bundle_values["tls"]["key"]


def test_an_unknown_layout_is_refused_by_the_schema(bundle_values: dict[str, Any]) -> None:
    with pytest.raises(HelmValuesError, match="layout"):
        render({**bundle_values, "layout": "both"})


def test_the_rendered_settings_are_what_the_connector_reads_from_a_bundle(
    bundle_values: dict[str, Any],
) -> None:
    settings_map = find(render(bundle_values), "ConfigMap", "-settings")

    settings = msgspec.json.decode(settings_map["data"]["edge.json"], type=EdgeSettings)

    assert settings.cluster == "edge-berlin"
    assert settings.hub_urls == ["tls://hub.example.com:443"]
    assert settings.inventory_interval == 15.0
    assert settings.labels == {"region": "eu"}


def test_the_pods_kubeconfig_uses_their_service_account_and_the_release_namespace(
    bundle_values: dict[str, Any], tmp_path: Path
) -> None:
    kubeconfig = find(render(bundle_values, namespace="edge"), "ConfigMap", "-kubeconfig")
    path = tmp_path / "config"
    path.write_text(kubeconfig["data"]["config"])

    config = load_config(path)

    assert config.namespace == "edge"
    assert config.token_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert config.server == "https://kubernetes.default.svc"


def test_the_controller_may_be_confined_to_listed_rules(bundle_values: dict[str, Any]) -> None:
    rule = {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}
    values = {**bundle_values, "controller": {"clusterAdmin": False, "rules": [rule]}}

    role = find(render(values), "ClusterRole")

    assert rule in role["rules"]
    assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} not in role["rules"]


def test_the_charts_crds_are_the_controllers_own() -> None:
    chart = Chart.load(CHART)
    try:
        crds = {c["filename"].rpartition("/")[2]: c["data"] for c in chart.crds}
    finally:
        chart.close()

    assert sorted(crds) == sorted(CRD_FILES)
    for name in CRD_FILES:
        source = (REPO / "cluster_controller" / "crds" / name).read_text()
        data = crds[name]
        text = data if isinstance(data, str) else bytes(data).decode()
        assert yaml.safe_load(text) == yaml.safe_load(source), name


def test_values_without_a_bundle_are_refused_by_the_schema() -> None:
    with pytest.raises(HelmValuesError, match="tls"):
        render({"cluster": "edge-berlin"})


def test_the_chart_lints_clean_with_bundle_values(bundle_values: dict[str, Any]) -> None:
    report = lint(CHART, bundle_values, strict=True, namespace="fleetbus-system")

    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert errors == []
    assert report["errors"] in ([], None)


@pytest.mark.parametrize(
    ("layout", "pods"),
    [
        ("single", [("StatefulSet", "fleetbus-edge", 8081)]),
        (
            "split",
            [
                ("StatefulSet", "fleetbus-edge-connector", 8081),
                ("Deployment", "fleetbus-edge-controller", 8082),
            ],
        ),
    ],
)
def test_every_pod_is_probed_on_its_own_ip_and_no_servicemonitor_is_rendered_by_default(
    bundle_values: dict[str, Any], layout: str, pods: list[tuple[str, str, int]]
) -> None:
    documents = render({**bundle_values, "layout": layout})

    assert sorted(
        (d["kind"], d["metadata"]["name"])
        for d in documents
        if d["kind"] in ("StatefulSet", "Deployment")
    ) == sorted((kind, name) for kind, name, _ in pods)
    for kind, name, port in pods:
        container = find(documents, kind, name)["spec"]["template"]["spec"]["containers"][0]
        assert f"--health-addr=$(POD_IP):{port}" in container["args"]
        assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert container["ports"] == [{"name": "health", "containerPort": port, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert not [d for d in documents if d["kind"] in ("ServiceMonitor", "Service")]
    assert "ingress" not in find(documents, "NetworkPolicy")["spec"], "all ingress denied"


@pytest.mark.parametrize(
    ("layout", "services"),
    [
        ("single", ["fleetbus-edge-metrics"]),
        ("split", ["fleetbus-edge-connector-metrics", "fleetbus-edge-controller-metrics"]),
    ],
)
def test_the_servicemonitor_scrapes_every_pods_metrics_through_in_cluster_services_when_enabled(
    bundle_values: dict[str, Any], layout: str, services: list[str]
) -> None:
    values = {
        **bundle_values,
        "layout": layout,
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "prom"},
            "scrapeNamespaceSelector": {"matchLabels": {"name": "monitoring"}},
        },
    }
    documents = render(values)

    monitor = find(documents, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "health", "path": "/metrics", "interval": "30s"}
    ]
    rendered = [d for d in documents if d["kind"] == "Service"]
    assert sorted(s["metadata"]["name"] for s in rendered) == services
    for service in rendered:
        assert service["spec"]["clusterIP"] == "None"
        assert service["metadata"]["labels"]["fleetbus.io/metrics"] == "true"
    ingress = find(documents, "NetworkPolicy")["spec"]["ingress"]
    assert ingress == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "ports": [{"port": "health", "protocol": "TCP"}],
        }
    ]


def test_the_pods_kubeconfig_is_json_so_the_edge_reads_it_without_a_yaml_parser(
    bundle_values: dict[str, Any],
) -> None:
    kubeconfig = find(render(bundle_values, namespace="edge"), "ConfigMap", "-kubeconfig")

    document = json.loads(kubeconfig["data"]["config"])

    assert document["contexts"][0]["context"]["namespace"] == "edge"
