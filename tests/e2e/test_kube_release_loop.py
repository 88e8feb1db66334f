"""Release semantics through the whole loop on the acting test cluster.

Hub (`fleetbus up`) → TLS leaf → edge connector → cluster controller on `kube_cluster`: two
tasksets claiming one ConfigMap (the second is reported failed, naming the first), a rollback
that brings version 1's objects back, and `cluster rm --drain` leaving the cluster empty.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_hub_process import hub
from tests.e2e.test_kube_cluster_loop import CLUSTER, Loop, loop, watch_for_complete_job
from tests.e2e.test_kube_loop import event_types, poll, status_rows
from tests.kube_envtest import unique_namespace_name

__all__ = ["hub", "loop"]

pytestmark = pytest.mark.kube


def configmaps(root: Path, name: str, **objects: str) -> Path:
    source = root / name
    source.mkdir()
    for key, value in objects.items():
        object_name = key.replace("_", "-")
        (source / f"{object_name}.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {object_name}\n"
            f"data:\n  value: '{value}'\n"
        )
    return source


def publish(loop: Loop, source: Path, name: str, namespace: str) -> None:
    done = loop.hub.fleetbus(
        "publish", str(source), "--name", name, "--namespace", namespace, "--cluster", CLUSTER
    )
    assert done.returncode == 0, done.stderr


async def applied_version(loop: Loop, taskset: str, version: int) -> None:
    await poll(
        lambda: status_rows(loop.hub, taskset),
        lambda rows: any(
            r["cluster"] == CLUSTER and r["state"] == "applied" and r["applied_version"] == version
            for r in rows
        ),
        f"{taskset} v{version} applied on {CLUSTER}",
    )


async def configmap(loop: Loop, namespace: str, name: str) -> Any:
    return await loop.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")


async def test_a_second_taskset_claiming_a_configmap_is_reported_failed_naming_the_first(
    loop: Loop,
) -> None:
    app = unique_namespace_name("claims")
    await loop.kubectl("create", "namespace", app)
    publish(loop, configmaps(loop.tmp_path, "first", shared="first"), "first", app)
    await loop.wait_state("first", "applied")

    publish(loop, configmaps(loop.tmp_path, "second", shared="second"), "second", app)

    failed = [e for e in await loop.events("TaskFailed") if e["taskset"] == "second"]
    assert failed, "no TaskFailed for the second taskset"
    assert f"ConfigMap/{app}/shared is owned by taskset first" in failed[0]["reason"]
    live = await configmap(loop, app, "shared")
    assert live["data"] == {"value": "first"}
    assert live["metadata"]["labels"]["fleetbus.io/task"] == "first"


async def test_rollback_restores_version_1_and_drain_leaves_the_cluster_empty(
    loop: Loop,
) -> None:
    app = unique_namespace_name("rollback")
    await loop.kubectl("create", "namespace", app)
    publish(loop, configmaps(loop.tmp_path, "v1", app="one", only_v1="x"), "app", app)
    await applied_version(loop, "app", 1)
    publish(loop, configmaps(loop.tmp_path, "v2", app="two", only_v2="y"), "app", app)
    await applied_version(loop, "app", 2)
    assert await configmap(loop, app, "only-v1") is None

    rolled = await asyncio.to_thread(loop.hub.fleetbus, "rollback", "app", "--to-version", "1")
    assert rolled.returncode == 0, rolled.stderr
    assert "published as v3" in rolled.stdout

    await applied_version(loop, "app", 3)
    assert (await configmap(loop, app, "app"))["data"] == {"value": "one"}
    assert await configmap(loop, app, "only-v1") is not None
    assert await configmap(loop, app, "only-v2") is None
    listed = await asyncio.to_thread(loop.hub.fleetbus, "events", "--taskset", "app", "-o", "json")
    published = [
        row["event"]
        for row in json.loads(listed.stdout)
        if row["event"]["type"] == "TasksetPublished"
    ]
    assert [e["taskset_version"] for e in published] == [1, 2, 3]
    assert published[2]["rollback_of"] == 1
    assert published[2]["causation_id"] == published[0]["id"]

    publish(loop, configmaps(loop.tmp_path, "other", other="z"), "other", app)
    await loop.wait_state("other", "applied")

    drained = await asyncio.to_thread(
        loop.hub.fleetbus, "cluster", "rm", CLUSTER, "--drain", "--drain-timeout", "50"
    )

    assert drained.returncode == 0, drained.stderr
    assert f"cluster {CLUSTER} is empty" in drained.stdout
    assert "deregistered" in drained.stdout
    for name in ("app", "only-v1", "other"):
        assert await configmap(loop, app, name) is None, name
    assert await loop.controller.task("app") is None
    assert await loop.controller.task("other") is None


RELEASE_CHART_APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  annotations:
    fleetbus.io/ignore-paths: /spec/replicas
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "api:{{ .Values.tag }}"}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: tuning
  annotations:
    fleetbus.io/drift: report
data: {level: "3"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: seed-input
data: {rows: "42"}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: seed
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: seed, image: busybox, command: ["true"]}]
"""

RELEASE_CHART_SPEC = """\
stepJobs:
  - job: seed
    object: {kind: ConfigMap, name: seed-input}
"""

RELEASE_HOOKS = [
    ("install-a", "pre-install", -5),
    ("install-b", "pre-install", 0),
    ("install-c", "pre-install", 5),
    ("upgrade", "pre-upgrade", 0),
    ("cleanup", "pre-delete", 0),
]


def release_chart(root: Path) -> Path:
    chart = root / "release"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: release\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("tag: '1'\n")
    (chart / "fleetbus.yaml").write_text(RELEASE_CHART_SPEC)
    (chart / "templates" / "app.yaml").write_text(RELEASE_CHART_APP)
    for name, event, weight in RELEASE_HOOKS:
        (chart / "templates" / f"{name}.yaml").write_text(
            f"apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  annotations:\n"
            f"    helm.sh/hook: {event}\n    helm.sh/hook-weight: '{weight}'\n"
            "spec:\n  template:\n    spec:\n      restartPolicy: Never\n"
            "      containers: [{name: hook, image: busybox, command: ['true']}]\n"
        )
    return chart


async def jobs_in(loop: Loop, namespace: str) -> dict[str, dict[str, Any]]:
    listing = await loop.get(f"/apis/batch/v1/namespaces/{namespace}/jobs")
    return {job["metadata"]["name"]: job for job in (listing or {}).get("items", [])}


async def test_a_published_chart_runs_hooks_step_jobs_and_drift_settings_as_written(
    loop: Loop,
) -> None:
    app = unique_namespace_name("release")
    await loop.kubectl("create", "namespace", app)
    chart = release_chart(loop.tmp_path)
    publish(loop, chart, "release", app)
    await applied_version(loop, "release", 1)

    installed = await jobs_in(loop, app)
    assert {"install-a", "install-b", "install-c"} <= set(installed)
    assert "upgrade" not in installed
    assert "cleanup" not in installed
    for before, after in (("install-a", "install-b"), ("install-b", "install-c")):
        completed = installed[before]["status"]["completionTime"]
        assert completed <= installed[after]["metadata"]["creationTimestamp"], (before, after)
    step_jobs = [
        job for job in installed.values() if job["metadata"]["name"].startswith("release-")
    ]
    assert len(step_jobs) == 1, "the seed Job runs as a Step Job, not as itself"
    assert "seed" not in installed
    account = step_jobs[0]["spec"]["template"]["spec"]["serviceAccountName"]
    assert account.startswith("fbstep-")

    await loop.kubectl("scale", "deployment", "api", "-n", app, "--replicas=5")
    await loop.kubectl("set", "image", "deployment/api", "-n", app, "api=api:evil")
    await loop.kubectl("patch", "configmap", "tuning", "-n", app, "-p", '{"data":{"level":"9"}}')

    detected = await poll(
        lambda: _drift_events(loop),
        lambda events: any(e["object"] == f"ConfigMap/{app}/tuning" for e in events),
        "report-only drift of the tuning ConfigMap in fleetbus events",
    )
    [tuning] = [e for e in detected if e["object"] == f"ConfigMap/{app}/tuning"]
    assert tuning["fields"] == ["/data/level"]
    assert tuning["policy"] == "report"

    async def image_reverted() -> Any:
        live = await loop.get(f"/apis/apps/v1/namespaces/{app}/deployments/api")
        image = live["spec"]["template"]["spec"]["containers"][0]["image"]
        return live if image == "api:1" else None

    live = await loop.controller.wait_for("the image to be reverted", image_reverted)
    assert live["spec"]["replicas"] == 5, "the hand scale stands"
    assert (await configmap(loop, app, "tuning"))["data"] == {"level": "9"}, "reported only"
    corrected = [e for e in event_types(loop.hub) if e["type"] == "DriftCorrected"]
    assert all(e["object"] != f"ConfigMap/{app}/tuning" for e in corrected)

    values = loop.tmp_path / "v2.yaml"
    values.write_text("tag: '2'\n")
    done = loop.hub.fleetbus(
        "publish", str(chart), "--name", "release", "--namespace", app, "--cluster", CLUSTER,
        "--values", str(values),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    await applied_version(loop, "release", 2)
    upgraded = await jobs_in(loop, app)
    assert "upgrade" in upgraded
    for name in ("install-a", "install-b", "install-c"):
        assert upgraded[name]["metadata"]["uid"] == installed[name]["metadata"]["uid"], name

    cleanup_seen = asyncio.ensure_future(
        asyncio.to_thread(watch_for_complete_job, loop.kube, app, "cleanup")
    )
    try:
        retired = await asyncio.to_thread(loop.hub.fleetbus, "retire", "release")
        assert retired.returncode == 0, retired.stderr
        cleanup = await asyncio.wait_for(cleanup_seen, 120)
    finally:
        cleanup_seen.cancel()
        await asyncio.gather(cleanup_seen, return_exceptions=True)
    assert cleanup["status"]["succeeded"] == 1, "the pre-delete hook ran on retire"

    async def task_gone() -> bool:
        return await loop.controller.task("release") is None

    await loop.controller.wait_for("the release Task to be gone", task_gone, 120.0)
    assert await loop.get(f"/apis/apps/v1/namespaces/{app}/deployments/api") is None


def _drift_events(loop: Loop) -> list[dict[str, Any]]:
    return [e for e in event_types(loop.hub) if e["type"] == "DriftDetected"]


def _hub_events(loop: Loop) -> list[dict[str, Any]]:
    done = loop.hub.fleetbus("events", "--cluster", CLUSTER, "-o", "json")
    if done.returncode != 0:
        return []
    return [row["event"] for row in json.loads(done.stdout)]


async def test_the_edge_reports_its_clusters_capabilities_and_the_hub_logs_them(
    loop: Loop,
) -> None:
    found = await poll(
        lambda: _hub_events(loop),
        lambda events: any(e["type"] == "ClusterCapabilitiesReported" for e in events),
        "the cluster's capabilities in the hub's log",
    )
    [reported] = [e for e in found if e["type"] == "ClusterCapabilitiesReported"]
    version = await loop.get("/version")
    assert reported["capabilities"]["kubeVersion"] == version["gitVersion"]
    kinds = {(r["groupVersion"], r["kind"]) for r in reported["capabilities"]["resources"]}
    assert ("apps/v1", "Deployment") in kinds
    assert ("fleetbus.io/v1alpha1", "Task") in kinds


async def test_a_chart_is_rendered_for_the_capabilities_its_cluster_reported(
    loop: Loop,
) -> None:
    app = unique_namespace_name("capable")
    await loop.kubectl("create", "namespace", app)
    chart = loop.tmp_path / "capable"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: capable\nversion: 0.1.0\n")
    (chart / "templates" / "probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n"
        '  kube: "{{ .Capabilities.KubeVersion.Version }}"\n'
        '  tasks: "{{ .Capabilities.APIVersions.Has "fleetbus.io/v1alpha1/Task" }}"\n'
        '  revision: "{{ .Release.Revision }}"\n'
    )
    await poll(
        lambda: _hub_events(loop),
        lambda events: any(e["type"] == "ClusterCapabilitiesReported" for e in events),
        "the cluster's capabilities in the hub's log",
    )
    publish(loop, chart, "capable", app)
    version = (await loop.get("/version"))["gitVersion"]

    async def rendered_for_the_cluster() -> Any:
        live = await configmap(loop, app, "probe")
        return live if live and live["data"]["kube"] == version else None

    live = await loop.controller.wait_for(
        "the probe rendered for the cluster", rendered_for_the_cluster
    )
    assert live["data"]["tasks"] == "true"
    assert live["data"]["revision"] == "1"


async def test_adopt_takes_over_an_object_and_retire_keeps_a_crd_marked_keep(
    loop: Loop,
) -> None:
    app = unique_namespace_name("adopt")
    group = f"{app}.example.com"
    await loop.kubectl("create", "namespace", app)
    await loop.kubectl("create", "configmap", "pre", "-n", app, "--from-literal=value=by-hand")
    source = loop.tmp_path / "adopter"
    source.mkdir()
    (source / "objects.yaml").write_text(
        f"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: pre
  annotations:
    fleetbus.io/adopt: "true"
data:
  value: from-fleetbus
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.{group}
  annotations:
    helm.sh/resource-policy: keep
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Gadget, plural: gadgets, singular: gadget}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
    )
    publish(loop, source, "adopter", app)
    await loop.wait_state("adopter", "applied")
    live = await configmap(loop, app, "pre")
    assert live["data"] == {"value": "from-fleetbus"}
    assert live["metadata"]["labels"]["fleetbus.io/task"] == "adopter"
    await asyncio.to_thread(
        loop.kube.request,
        "POST",
        f"/apis/{group}/v1/namespaces/{app}/gadgets",
        {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "mine"}},
    )

    retired = await asyncio.to_thread(loop.hub.fleetbus, "retire", "adopter")
    assert retired.returncode == 0, retired.stderr

    async def task_gone() -> bool:
        return await loop.controller.task("adopter") is None

    await loop.controller.wait_for("the adopter's Task to be gone", task_gone, 120.0)
    assert await configmap(loop, app, "pre") is None, "an adopted object is the taskset's own"
    crd = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.{group}"
    assert await loop.get(crd) is not None
    assert await loop.get(f"/apis/{group}/v1/namespaces/{app}/gadgets/mine") is not None
