"""The whole loop on the acting test cluster: charts delivered to Ready by real controllers.

Hub (`fleetbus up`) → TLS leaf → edge connector with the Kubernetes executor → cluster
controller, on `kube_cluster` (kube-controller-manager, kube-scheduler and KWOK nodes beside the
apiserver). A chart published with `fleetbus publish` becomes a Deployment whose pods are
scheduled and become Ready, hook Jobs that really run (and fail when the simulated kubelet is
asked to), drift made by hand with kubectl, and a retire that runs the preDelete Job and ends
with the namespace really gone.

Real charts from `tests/corpus` go the same way: ingress-nginx with its admission-webhook Jobs,
cert-manager with its CRDs and its startupapicheck post-install Job, kube-prometheus-stack with
its CRDs, custom resources, admission Jobs, Deployments and node-exporter DaemonSet. Each is
applied only after its hook Jobs completed and its workloads became Available: the times the
apiserver recorded for those conditions come no later than the cluster's TaskApplied report.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from fleetbus.bundle import read_edge_bundle
from fleetbus.edge import EdgeRuntime, EdgeState
from tests.e2e.test_hub_process import Hub, hub
from tests.e2e.test_kube_loop import event_types, poll, status_rows
from tests.integration.controller_harness import HOLD, ControllerEnv, running_controller
from tests.kube_envtest import (
    FAIL_ANNOTATION,
    KubeAPIServer,
    condition,
    get_or_none,
    unique_namespace_name,
)

__all__ = ["hub"]

pytestmark = pytest.mark.kube

CLUSTER = "edge-k8s"
SHOP_CHART = Path(__file__).resolve().parents[1] / "data" / "charts" / "shop"
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "charts"
CHART_READY_TIMEOUT_S = 300.0
"""How long a big chart may take to become Ready: kube-prometheus-stack's 150 objects take about
a minute on two busy cores, and a deadline is for a hang, never a measure of speed."""


@dataclass
class Loop:
    hub: Hub
    kube: KubeAPIServer
    controller: ControllerEnv
    tmp_path: Path

    def publish(self, chart: Path, name: str, namespace: str, values: dict[str, Any]) -> None:
        values_file = self.tmp_path / f"{name}-values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        done = self.hub.fleetbus(
            "publish",
            str(chart),
            "--name",
            name,
            "--namespace",
            namespace,
            "--values",
            str(values_file),
            "--cluster",
            CLUSTER,
        )
        assert done.returncode == 0, done.stderr

    async def state(self, taskset: str) -> str:
        rows = await asyncio.to_thread(status_rows, self.hub, taskset)
        mine = [r for r in rows if r["cluster"] == CLUSTER]
        return str(mine[0]["state"]) if mine else ""

    async def wait_state(self, taskset: str, state: str, within_s: float = 90.0) -> None:
        try:
            await poll(
                lambda: status_rows(self.hub, taskset),
                lambda rows: any(r["cluster"] == CLUSTER and r["state"] == state for r in rows),
                f"{taskset} {state} on {CLUSTER}",
                within_s,
            )
        except AssertionError as e:
            task = await self.controller.task(taskset)
            raise AssertionError(f"{e}\nthe Task's status: {(task or {}).get('status')}") from e

    async def events(self, kind: str) -> list[dict[str, Any]]:
        found = await poll(
            lambda: event_types(self.hub),
            lambda events: any(e["type"] == kind for e in events),
            f"{kind} in fleetbus events",
        )
        return [e for e in found if e["type"] == kind]

    async def applied_at(self, taskset: str) -> datetime:
        """When the cluster reported `taskset` applied (the TaskApplied event's time)."""
        applied = [e for e in await self.events("TaskApplied") if e["taskset"] == taskset]
        assert applied, f"no TaskApplied for {taskset}"
        return datetime.fromisoformat(applied[0]["occurred_at"])

    async def get(self, path: str) -> Any:
        return await asyncio.to_thread(get_or_none, self.kube, path)

    async def kubectl(self, *args: str) -> None:
        await asyncio.to_thread(self.kube.kubectl, *args)


@asynccontextmanager
async def loop_on_cluster(
    hub: Hub, kube: KubeAPIServer, namespace: str, tmp_path: Path
) -> AsyncIterator[Loop]:
    """A hub, a registered cluster's edge and the cluster controller, all running."""
    await asyncio.to_thread(hub.start)
    bundle_dir = tmp_path / "bundle"
    registered = await asyncio.to_thread(
        hub.fleetbus, "cluster", "register", CLUSTER, "--out", str(bundle_dir)
    )
    assert registered.returncode == 0, registered.stderr
    async with running_controller(kube.kubeconfig, namespace) as controller:
        executor = KubernetesExecutor(
            ApiClient.from_kubeconfig(kube.kubeconfig),
            cluster=CLUSTER,
            namespace=namespace,
            apply_timeout=CHART_READY_TIMEOUT_S,
        )
        edge = await EdgeRuntime.leaf(
            read_edge_bundle(bundle_dir), EdgeState(tmp_path / "edge"), executor
        )
        try:
            yield Loop(hub=hub, kube=kube, controller=controller, tmp_path=tmp_path)
        finally:
            await edge.stop()
            assert await asyncio.to_thread(hub.interrupt) == 0


@pytest.fixture
async def loop(
    hub: Hub, kube_cluster: KubeAPIServer, cluster_namespace: str, tmp_path: Path
) -> AsyncIterator[Loop]:
    async with loop_on_cluster(hub, kube_cluster, cluster_namespace, tmp_path) as running:
        yield running


def _is_true(obj: Any, kind: str) -> bool:
    return (condition(obj, kind) or {}).get("status") == "True"


def _became_true_at(obj: Any, kind: str) -> datetime:
    """When condition `kind` turned True, as the apiserver recorded it (whole seconds, rounded
    down, so a moment before any later report of the same machine's clock)."""
    found = condition(obj, kind) or {}
    assert found.get("status") == "True", f"{kind} is not True on {obj['metadata']['name']}"
    return datetime.fromisoformat(found["lastTransitionTime"])


async def test_a_published_chart_is_applied_only_after_its_deployment_is_available(
    loop: Loop,
) -> None:
    app = unique_namespace_name("shop")
    loop.publish(SHOP_CHART, "shop", app, {"podAnnotations": HOLD})
    deployment = f"/apis/apps/v1/namespaces/{app}/deployments/shop"

    async def held_pods() -> Any:
        pods = await loop.get(f"/api/v1/namespaces/{app}/pods?labelSelector=app%3Dshop")
        return pods if pods and len(pods["items"]) == 2 else None

    await loop.controller.wait_for("the shop pods to be scheduled", held_pods)
    waiting = await loop.controller.wait_for(
        "the Task to wait for the Deployment",
        lambda: _task_waiting_on(loop.controller, "shop", "Deployment/"),
    )
    assert waiting["phase"] == "Progressing"
    assert not _is_true(await loop.get(deployment), "Available")
    assert await loop.state("shop") != "applied"
    assert await loop.get(f"/apis/batch/v1/namespaces/{app}/jobs/shop-smoke-test") is None

    await loop.kubectl("annotate", "pods", "-n", app, "-l", "app=shop", "fleetbus.test/hold-")

    await loop.wait_state("shop", "applied")
    live = await loop.get(deployment)
    assert _is_true(live, "Available")
    assert live["status"]["availableReplicas"] == 2
    smoke = await loop.get(f"/apis/batch/v1/namespaces/{app}/jobs/shop-smoke-test")
    assert _is_true(smoke, "Complete")
    task = await loop.controller.task("shop")
    assert task is not None
    assert task["status"]["phase"] == "Ready"


async def _task_waiting_on(env: ControllerEnv, name: str, what: str) -> dict[str, Any] | None:
    task = await env.task(name)
    status = (task or {}).get("status") or {}
    return status if what in str(status.get("message", "")) else None


async def test_a_failing_hook_job_fails_the_task_with_the_jobs_reason_in_fleetbus_events(
    loop: Loop,
) -> None:
    app = unique_namespace_name("shop-broken")
    failure = {FAIL_ANNOTATION: "curl: (22) The requested URL returned error: 503"}
    loop.publish(SHOP_CHART, "shop", app, {"smokeTestAnnotations": failure})

    [failed] = await loop.events("TaskFailed")

    assert failed["phase"] == "postInstall"
    assert failed["object"] == f"Job/{app}/shop-smoke-test"
    assert "BackoffLimitExceeded" in failed["reason"]
    job = await loop.get(f"/apis/batch/v1/namespaces/{app}/jobs/shop-smoke-test")
    assert _is_true(job, "Failed")
    assert await loop.state("shop") != "applied"


async def test_a_deployment_scaled_by_hand_is_drift_and_is_scaled_back(loop: Loop) -> None:
    app = unique_namespace_name("shop-drift")
    loop.publish(SHOP_CHART, "shop", app, {})
    await loop.wait_state("shop", "applied")

    await loop.kubectl("scale", "deployment", "shop", "-n", app, "--replicas=5")

    [detected, *_] = await loop.events("DriftDetected")
    assert detected["object"] == f"Deployment/{app}/shop"
    assert detected["fields"] == ["/spec/replicas"]
    [corrected, *_] = await loop.events("DriftCorrected")
    assert corrected["causation_id"] == detected["id"]

    async def scaled_back() -> Any:
        live = await loop.get(f"/apis/apps/v1/namespaces/{app}/deployments/shop")
        status = live["status"] if live else {}
        done = live and live["spec"]["replicas"] == 2 and status.get("replicas") == 2
        return live if done else None

    await loop.controller.wait_for("the Deployment to be back at 2 replicas", scaled_back)


async def test_retire_runs_the_pre_delete_job_and_the_namespace_is_really_gone(
    loop: Loop,
) -> None:
    app = unique_namespace_name("shop-retired")
    loop.publish(SHOP_CHART, "shop", app, {})
    await loop.wait_state("shop", "applied")
    assert await loop.get(f"/apis/batch/v1/namespaces/{app}/jobs/shop-drain") is None
    drain_seen = asyncio.ensure_future(
        asyncio.to_thread(watch_for_complete_job, loop.kube, app, "shop-drain")
    )

    retired = await asyncio.to_thread(loop.hub.fleetbus, "retire", "shop")
    assert retired.returncode == 0, retired.stderr

    drain = await drain_seen
    assert drain["status"]["succeeded"] == 1

    async def namespace_gone() -> bool:
        return await loop.get(f"/api/v1/namespaces/{app}") is None

    await loop.controller.wait_for(f"namespace {app} to be gone", namespace_gone, 120.0)
    assert await loop.controller.task("shop") is None
    table = await asyncio.to_thread(loop.hub.fleetbus, "events", "--cluster", CLUSTER)
    assert "TaskApplied" in table.stdout


def watch_for_complete_job(kube: KubeAPIServer, namespace: str, name: str) -> dict[str, Any]:
    """Block until a watch on the namespace's Jobs shows Job `name` Complete; return it.

    A watch, not polling: once the preDelete Job completes, the retire goes on to delete the
    namespace, and the Job with it.
    """
    listing = kube.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")
    version = listing["metadata"]["resourceVersion"]
    path = (
        f"/apis/batch/v1/namespaces/{namespace}/jobs?watch=true&timeoutSeconds=120"
        f"&fieldSelector=metadata.name%3D{name}&resourceVersion={version}"
    )
    with kube.open("GET", path, timeout=130) as stream:
        for line in stream:
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED") and _is_true(event["object"], "Complete"):
                found: dict[str, Any] = event["object"]
                return found
    raise AssertionError(f"Job {namespace}/{name} was never seen Complete")


async def test_ingress_nginx_from_the_corpus_is_applied_after_its_admission_jobs_succeed(
    loop: Loop,
) -> None:
    app = unique_namespace_name("ingress-nginx")
    await asyncio.to_thread(loop.kube.kubectl, "create", "namespace", app)
    jobs_done = [
        asyncio.ensure_future(asyncio.to_thread(watch_for_complete_job, loop.kube, app, job))
        for job in ("ingress-nginx-admission-create", "ingress-nginx-admission-patch")
    ]
    # No load balancer in the test cluster: a LoadBalancer Service would never get an address.
    values = {"controller": {"service": {"type": "ClusterIP"}}}

    loop.publish(CORPUS / "ingress-nginx", "ingress-nginx", app, values)

    try:
        await loop.wait_state("ingress-nginx", "applied")
        for done in jobs_done:
            job = await asyncio.wait_for(done, 60)
            assert job["status"]["succeeded"] == 1
    finally:
        for done in jobs_done:
            done.cancel()
        await asyncio.gather(*jobs_done, return_exceptions=True)
    controller = await loop.get(
        f"/apis/apps/v1/namespaces/{app}/deployments/ingress-nginx-controller"
    )
    assert _is_true(controller, "Available")
    task = await loop.controller.task("ingress-nginx")
    assert task is not None
    assert task["status"]["phase"] == "Ready"


async def test_cert_manager_from_the_corpus_is_applied_after_its_startupapicheck_job_succeeds(
    loop: Loop,
) -> None:
    app = unique_namespace_name("cert-manager")
    await asyncio.to_thread(loop.kube.kubectl, "create", "namespace", app)
    # The post-install Job deletes itself once it succeeds (hook-delete-policy hook-succeeded):
    # only a watch started before the publish can see it complete.
    check_done = asyncio.ensure_future(
        asyncio.to_thread(watch_for_complete_job, loop.kube, app, "cert-manager-startupapicheck")
    )
    # The chart leaves its CRDs out unless asked; installed with them is what its docs describe,
    # and what startupapicheck exists to check.
    values = {"crds": {"enabled": True}}

    loop.publish(CORPUS / "cert-manager", "cert-manager", app, values)

    try:
        await loop.wait_state("cert-manager", "applied")
        check = await asyncio.wait_for(check_done, 60)
    finally:
        check_done.cancel()
        await asyncio.gather(check_done, return_exceptions=True)
    assert check["status"]["succeeded"] == 1
    applied = await loop.applied_at("cert-manager")
    assert _became_true_at(check, "Complete") <= applied
    for deployment in ("cert-manager", "cert-manager-cainjector", "cert-manager-webhook"):
        live = await loop.get(f"/apis/apps/v1/namespaces/{app}/deployments/{deployment}")
        assert _became_true_at(live, "Available") <= applied, deployment
    for crd in ("certificates.cert-manager.io", "clusterissuers.cert-manager.io"):
        established = await loop.get(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"
        )
        assert _is_true(established, "Established"), crd
    task = await loop.controller.task("cert-manager")
    assert task is not None
    assert task["status"]["phase"] == "Ready"


async def test_kube_prometheus_stack_from_the_corpus_is_applied_with_its_crds_established(
    loop: Loop,
) -> None:
    app = unique_namespace_name("monitoring")
    release = "kube-prometheus-stack"
    await asyncio.to_thread(loop.kube.kubectl, "create", "namespace", app)
    # The operator's webhook certificate is made by a pre-install Job and patched into the webhook
    # configurations by a post-install Job; both delete themselves once they succeed, so only a
    # watch started before the publish sees them complete.
    jobs_done = [
        asyncio.ensure_future(asyncio.to_thread(watch_for_complete_job, loop.kube, app, job))
        for job in (f"{release}-admission-create", f"{release}-admission-patch")
    ]

    loop.publish(CORPUS / release, release, app, {})

    try:
        await loop.wait_state(release, "applied", CHART_READY_TIMEOUT_S)
        jobs = [await asyncio.wait_for(done, 60) for done in jobs_done]
    finally:
        for done in jobs_done:
            done.cancel()
        await asyncio.gather(*jobs_done, return_exceptions=True)
    applied = await loop.applied_at(release)
    for job in jobs:
        assert job["status"]["succeeded"] == 1
        assert _became_true_at(job, "Complete") <= applied, job["metadata"]["name"]
    for crd in ("prometheuses", "alertmanagers", "servicemonitors", "prometheusrules"):
        path = (
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}.monitoring.coreos.com"
        )
        assert _became_true_at(await loop.get(path), "Established") <= applied, crd
    monitoring = f"/apis/monitoring.coreos.com/v1/namespaces/{app}"
    assert await loop.get(f"{monitoring}/prometheuses/{release}-prometheus") is not None
    assert await loop.get(f"{monitoring}/prometheusrules/{release}-node.rules") is not None
    for deployment in ("operator", "kube-state-metrics", "grafana"):
        live = await loop.get(f"/apis/apps/v1/namespaces/{app}/deployments/{release}-{deployment}")
        assert _became_true_at(live, "Available") <= applied, deployment
    exporter = await loop.get(
        f"/apis/apps/v1/namespaces/{app}/daemonsets/{release}-prometheus-node-exporter"
    )
    assert exporter["status"]["desiredNumberScheduled"] > 0
    assert exporter["status"]["numberReady"] == exporter["status"]["desiredNumberScheduled"]
    task = await loop.controller.task(release)
    assert task is not None
    assert task["status"]["phase"] == "Ready"
