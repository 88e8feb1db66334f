"""Per-cluster rendering: charts see their cluster's capabilities and release, rendered once per
distinct context (Helm's real engine), and edges report the capabilities from real discovery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from events.catalog import ClusterCapabilitiesReported, Placement, TasksetPublished
from events.store import EventStore
from normalizer import NormalizeOptions, normalize
from normalizer.helm import render_chart_archive
from scheduler.antientropy import AntiEntropyService
from scheduler.materialize import Materializer
from taskset.capabilities import ApiResource, ClusterCapabilities, RenderContext, capabilities_of
from taskset.codec import encode_taskset
from taskset.digest import digest_of
from taskset.model import Taskset
from tests.kube_envtest import KubeAPIServer
from tests.scheduler_fixtures import T0, envelope, registered
from tests.unit.test_placement import Harness

PROBE_CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: probe
data:
  kube: "{{ .Capabilities.KubeVersion.Version }}"
  upgrade: "{{ .Release.IsUpgrade }}"
  revision: "{{ .Release.Revision }}"
  level: "{{ .Values.level }}"
"""

PROBE_MONITOR = """\
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor" }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: probe
spec:
  selector: {matchLabels: {app: probe}}
  endpoints: [{port: http}]
{{- end }}
"""


def chart(tmp_path: Path, consults: bool = True) -> Path:
    directory = tmp_path / ("probe" if consults else "plain")
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {directory.name}\nversion: 1.0.0\n"
    )
    (directory / "values.yaml").write_text("level: 1\n")
    if consults:
        (directory / "templates" / "config.yaml").write_text(PROBE_CONFIG)
        (directory / "templates" / "monitor.yaml").write_text(PROBE_MONITOR)
    else:
        (directory / "templates" / "config.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata: {a: b}\n"
        )
    return directory


class CountingHelm:
    """Helm's engine over archives kept in memory, counting renders by context."""

    def __init__(self) -> None:
        self.archives: dict[str, bytes] = {}
        self.contexts: list[RenderContext | None] = []

    def render(
        self,
        chart_archive_digest: str,
        values: dict[str, Any],
        name: str,
        namespace: str,
        previous: Taskset | None = None,
        context: RenderContext | None = None,
    ) -> Taskset:
        self.contexts.append(context)
        archive = self.archives[chart_archive_digest]
        return render_chart_archive(archive, values, name, namespace, previous, context)


def publish(h: Harness, helm: CountingHelm, source: Path, version: int, level: int) -> None:
    normalized = normalize(
        source, NormalizeOptions(name="probe", namespace="apps", values=[{"level": level}])
    )
    taskset = normalized.taskset
    assert taskset.source is not None
    assert normalized.chart_archive is not None
    helm.archives[taskset.source.chart_archive] = normalized.chart_archive
    body = encode_taskset(taskset)
    h.append(
        TasksetPublished(
            **envelope(),
            taskset="probe",
            taskset_version=version,
            digest=digest_of(taskset),
            source_digest=taskset.source.digest,
            format="helm",
            body=body,
            body_size=len(body),
            values=normalized.values,
            chart_archive=taskset.source.chart_archive,
            placement=Placement(selector="fleet=yes"),
        )
    )


def caps(version: str, monitoring: bool) -> ClusterCapabilities:
    resources = [ApiResource(group_version="apps/v1", kind="Deployment", namespaced=True)]
    if monitoring:
        resources.append(
            ApiResource(
                group_version="monitoring.coreos.com/v1", kind="ServiceMonitor", namespaced=True
            )
        )
    return capabilities_of(version, resources)


SETS = {"a": caps("v1.30.1", True), "b": caps("v1.31.0", False), "c": caps("v1.32.0", True)}


def reported(cluster: str, capabilities: ClusterCapabilities) -> ClusterCapabilitiesReported:
    return ClusterCapabilitiesReported(
        **envelope("hub:anti-entropy"),
        cluster=cluster,
        capabilities=capabilities,
        digest=capabilities.digest,
    )


def probe_data(h: Harness, cluster: str) -> tuple[dict[str, str], bool]:
    task = h.task(cluster, "probe")
    assert task is not None
    assert task.taskset is not None
    objects = {step.ref.kind: step.object for _, step in task.taskset.steps()}
    return objects["ConfigMap"]["data"], "ServiceMonitor" in objects


def fleet(helm: CountingHelm) -> Harness:
    h = Harness()
    h.materialize = Materializer(helm)
    clusters = [f"{name}-{i}" for name in SETS for i in range(10)]
    for cluster in clusters:
        h.append(registered(cluster, fleet="yes"), reported(cluster, SETS[cluster[0]]))
    return h


def test_thirty_clusters_with_three_capability_sets_render_three_times_each_as_its_cluster(
    tmp_path: Path,
) -> None:
    helm = CountingHelm()
    h = fleet(helm)
    source = chart(tmp_path)

    publish(h, helm, source, 1, level=1)

    assert len(helm.contexts) == 3
    data, monitored = probe_data(h, "a-3")
    assert data == {"kube": "v1.30.1", "upgrade": "false", "revision": "1", "level": "1"}
    assert monitored
    data, monitored = probe_data(h, "b-7")
    assert data["kube"] == "v1.31.0"
    assert not monitored, "no ServiceMonitor where the cluster has no monitoring.coreos.com/v1"
    assert probe_data(h, "c-0")[1]

    h.decide()
    assert len(helm.contexts) == 3, "an unchanged fleet renders nothing again"

    publish(h, helm, source, 2, level=2)

    assert len(helm.contexts) == 6
    data, _ = probe_data(h, "a-3")
    assert data == {"kube": "v1.30.1", "upgrade": "true", "revision": "2", "level": "2"}
    scheduled = len(h.scheduled())
    h.decide()
    assert len(h.scheduled()) == scheduled, "a revision-dependent render is stable"


def test_a_chart_consulting_nothing_per_cluster_is_never_rendered_again(tmp_path: Path) -> None:
    helm = CountingHelm()
    h = fleet(helm)
    normalized = normalize(chart(tmp_path, consults=False), NormalizeOptions(name="probe"))
    assert normalized.taskset.source is not None
    assert normalized.taskset.source.consults == []

    publish(h, helm, chart(tmp_path / "again", consults=False), 1, level=1)

    assert helm.contexts == []
    assert h.task("b-1", "probe") is not None


async def test_the_hub_records_a_clusters_capabilities_only_when_they_change(
    event_store: EventStore,
) -> None:
    service = AntiEntropyService(event_store)
    first = await service.record_capabilities("edge-1", SETS["a"], T0)
    assert first is not None
    assert await service.record_capabilities("edge-1", SETS["a"], T0) is None
    restarted = AntiEntropyService(event_store)
    assert await restarted.record_capabilities("edge-1", SETS["a"], T0) is None
    changed = await restarted.record_capabilities("edge-1", SETS["b"], T0)
    assert changed is not None
    assert changed.capabilities.kube_version == "v1.31.0"


@pytest.mark.kube
async def test_an_edge_reads_its_clusters_capabilities_from_discovery(
    kube_apiserver: KubeAPIServer,
) -> None:
    executor = KubernetesExecutor(
        ApiClient.from_kubeconfig(kube_apiserver.kubeconfig), cluster="edge-1"
    )
    try:
        found = await executor.capabilities()
    finally:
        await executor.close()
    assert found is not None
    assert found.kube_version.startswith("v1.")
    resources = set(found.resources)
    assert ApiResource(group_version="apps/v1", kind="Deployment", namespaced=True) in resources
    assert ApiResource(group_version="v1", kind="Namespace", namespaced=False) in resources
    assert ApiResource(group_version="v1", kind="ConfigMap", namespaced=True) in resources
    assert "apps/v1/Deployment" in found.api_versions()
