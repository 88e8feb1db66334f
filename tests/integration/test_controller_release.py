"""Release semantics on the acting test cluster: hooks, ownership, resource policy, the spec.

Tasksets come from real sources through the normalizer (a Helm chart with hooks, YAML with a
`fleetbus.yaml` beside it), are written as Task and Step resources the way the connector writes
them, and reconciled by the real controller on the test cluster (kube-controller-manager and
KWOK run the Jobs). What is asserted is what the cluster shows: which Jobs were created, when,
what is left after removal, what a hand edit becomes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from kube_contract.resources import EVENT, JOB, TASK
from normalizer import NormalizeOptions, normalize
from taskset.model import ClusterTask, ObjectRef, Step, Taskset
from tests.integration.controller_harness import (
    HOLD_ANNOTATION,
    ControllerEnv,
    cluster_task,
    unique,
)
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube


@pytest.fixture
def env(cluster_env: ControllerEnv) -> ControllerEnv:
    return cluster_env


# --- a chart with hooks of every kind -----------------------------------------------------------

HOOK_JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  annotations:
    helm.sh/hook: {events}
    helm.sh/hook-weight: "{weight}"
{policy}spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {{{annotations}}}
    spec:
      restartPolicy: Never
      containers: [{{name: hook, image: busybox, command: ["true"]}}]
"""

HOOKS = [
    # name, events, weight, delete policy
    ("install-a", "pre-install", -5, ""),
    ("install-b", "pre-install", 0, ""),
    ("install-c", "pre-install", 5, "hook-succeeded"),
    ("upgrade-a", "pre-upgrade", -5, ""),
    ("upgrade-b", "pre-upgrade", 5, ""),
    ("post-install", "post-install", 0, ""),
    ("post-upgrade", "post-upgrade", 0, ""),
    ("pre-delete", "pre-delete", 0, ""),
    ("post-delete", "post-delete", 0, ""),
]


def hooks_chart(tmp_path: Path, held: str = "") -> Path:
    chart = tmp_path / "hooks"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: hooks\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("generation: 1\n")
    (chart / "templates" / "config.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n"
        "data:\n  generation: {{ .Values.generation | quote }}\n"
    )
    for name, events, weight, policy in HOOKS:
        annotations = f'"{HOLD_ANNOTATION}": "true"' if name == held else ""
        policy_line = f'    helm.sh/hook-delete-policy: "{policy}"\n' if policy else ""
        (chart / "templates" / f"{name}.yaml").write_text(
            HOOK_JOB.format(
                name=name, events=events, weight=weight, policy=policy_line, annotations=annotations
            )
        )
    return chart


def chart_task(chart: Path, name: str, namespace: str, generation: int) -> ClusterTask:
    taskset = normalize(
        chart,
        NormalizeOptions(name=name, namespace=namespace, values=[{"generation": generation}]),
    ).taskset
    return cluster_task(taskset, generation=generation, version=generation)


async def jobs(env: ControllerEnv) -> dict[str, dict[str, Any]]:
    listing = await env.kube.list(JOB, namespace=env.namespace)
    return {str(job["metadata"]["name"]): job for job in listing.items}


async def ready_at_generation(env: ControllerEnv, name: str, generation: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status = ((await env.task(name)) or {}).get("status") or {}
        done = status.get("phase") == "Ready" and status.get("generation") == generation
        return status if done else None

    return await env.wait_for(f"{name} Ready at generation {generation}", check, 120.0)


async def test_hooks_run_when_helm_runs_them_one_weight_after_another(
    env: ControllerEnv, tmp_path: Path
) -> None:
    name = unique("hooks")
    chart = hooks_chart(tmp_path, held="install-a")
    await env.publish(chart_task(chart, name, env.namespace, 1))

    # Weight -5 is held by the simulated kubelet: nothing of a later weight may exist yet.
    await env.wait_for("the weight -5 hook", lambda: _job(env, "install-a"))
    assert set(await jobs(env)) == {"install-a"}
    assert await env.get("v1", "ConfigMap", "app", env.namespace) is None
    await env.release_when_running(env.namespace, "job-name=install-a")

    status = await ready_at_generation(env, name, 1)
    assert status["release"] == {"revision": 1, "digest": status["digest"], "deployed": 1}
    installed = await jobs(env)
    assert set(installed) == {"install-a", "install-b", "post-install"}, (
        "upgrade hooks do not run on an install; install-c deleted itself (hook-succeeded)"
    )
    # One weight after another: each Job was created only after the one before completed.
    assert _completed(installed["install-a"]) <= _created(installed["install-b"])
    assert _completion_event(await _events(env), "install-c")
    assert await env.get("v1", "ConfigMap", "app", env.namespace) is not None

    await env.publish(chart_task(chart, name, env.namespace, 2))
    status = await ready_at_generation(env, name, 2)
    assert status["release"]["revision"] == 2
    assert status["release"]["upgrade"] is True
    upgraded = await jobs(env)
    assert {"upgrade-a", "upgrade-b", "post-upgrade"} <= set(upgraded)
    assert _completed(upgraded["upgrade-a"]) <= _created(upgraded["upgrade-b"])
    for install_only in ("install-a", "install-b", "post-install"):
        assert (
            upgraded[install_only]["metadata"]["uid"] == installed[install_only]["metadata"]["uid"]
        ), f"{install_only} must not run again on an upgrade"

    await env.publish(chart_task(chart, name, env.namespace, 3))
    await ready_at_generation(env, name, 3)
    again = await jobs(env)
    assert again["upgrade-a"]["metadata"]["uid"] != upgraded["upgrade-a"]["metadata"]["uid"], (
        "an upgrade hook runs on every upgrade"
    )
    assert "pre-delete" not in again
    assert "post-delete" not in again

    await env.kube.delete(TASK, name, namespace=env.namespace)
    await env.wait_for("the Task to be gone", lambda: _gone(env, name), 120.0)
    events = await _events(env)
    assert _completion_event(events, "pre-delete")
    assert _completion_event(events, "post-delete")
    assert await env.get("v1", "ConfigMap", "app", env.namespace) is None


async def _job(env: ControllerEnv, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await env.kube.get(JOB, name, env.namespace)
    return found


def _created(job: dict[str, Any]) -> str:
    return str(job["metadata"]["creationTimestamp"])


def _completed(job: dict[str, Any]) -> str:
    return str(job["status"]["completionTime"])


async def _events(env: ControllerEnv) -> list[dict[str, Any]]:
    listing = await env.kube.list(EVENT, namespace=env.namespace)
    return list(listing.items)


def _completion_event(events: list[dict[str, Any]], job: str) -> bool:
    return any(
        e.get("reason") == "Completed"
        and (e.get("involvedObject") or {}).get("kind") == "Job"
        and (e.get("involvedObject") or {}).get("name") == job
        for e in events
    )


async def _gone(env: ControllerEnv, name: str) -> bool:
    return await env.task(name) is None


async def test_a_failed_hook_with_hook_failed_is_deleted_and_fails_the_task(
    env: ControllerEnv, tmp_path: Path
) -> None:
    chart = tmp_path / "failing"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: failing\nversion: 0.1.0\n")
    (chart / "templates" / "hook.yaml").write_text(
        HOOK_JOB.format(
            name="doomed",
            events="pre-install",
            weight=0,
            policy='    helm.sh/hook-delete-policy: "hook-failed"\n',
            annotations='"fleetbus.test/fail": "exit 3"',
        )
    )
    name = unique("failing")
    await env.publish(chart_task(chart, name, env.namespace, 1))

    status = await env.task_phase(name, "Failed")
    assert "Job/" in status["failedObject"]
    assert "doomed" in status["failedObject"]
    await env.gone("batch/v1", "Job", "doomed", env.namespace)


# --- ownership ----------------------------------------------------------------------------------


def shared_configmap(name: str, namespace: str, value: str, *, adopt: bool = False) -> Taskset:
    return Taskset(
        name=name,
        namespace=namespace,
        adopt=adopt,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "shared"},
                    "data": {"owner": value},
                }
            )
        ],
    )


async def test_a_second_taskset_claiming_an_object_fails_naming_the_first_and_leaves_it(
    env: ControllerEnv,
) -> None:
    first, second = unique("first"), unique("second")
    await env.publish(cluster_task(shared_configmap(first, env.namespace, "first")))
    await env.task_phase(first, "Ready")

    await env.publish(cluster_task(shared_configmap(second, env.namespace, "second")))

    status = await env.task_phase(second, "Failed")
    assert status["reason"] == "OwnershipConflict"
    assert f"ConfigMap/{env.namespace}/shared is owned by taskset {first}" in status["message"]
    live = await env.get("v1", "ConfigMap", "shared", env.namespace)
    assert live["data"] == {"owner": "first"}
    assert live["metadata"]["labels"]["fleetbus.io/task"] == first
    managers = {entry["manager"] for entry in live["metadata"]["managedFields"]}
    assert f"fleetbus:{first}" in managers
    assert f"fleetbus:{second}" not in managers

    # Removing the loser never deletes what the winner owns.
    await env.kube.delete(TASK, second, namespace=env.namespace)
    await env.wait_for("the second Task to be gone", lambda: _gone(env, second))
    assert (await env.get("v1", "ConfigMap", "shared", env.namespace))["data"] == {"owner": "first"}


async def test_a_pre_existing_object_is_a_conflict_unless_the_taskset_adopts_it(
    env: ControllerEnv, kube_cluster: KubeAPIServer
) -> None:
    kube_cluster.request(
        "POST",
        f"/api/v1/namespaces/{env.namespace}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared"},
            "data": {"owner": "by hand"},
        },
    )
    refused = unique("refused")
    await env.publish(cluster_task(shared_configmap(refused, env.namespace, "refused")))
    status = await env.task_phase(refused, "Failed")
    assert "exists already and was not applied by fleetbus" in status["message"]
    live = await env.get("v1", "ConfigMap", "shared", env.namespace)
    assert live["data"] == {"owner": "by hand"}

    adopter = unique("adopter")
    await env.publish(cluster_task(shared_configmap(adopter, env.namespace, "adopted", adopt=True)))
    await env.task_phase(adopter, "Ready")
    live = await env.get("v1", "ConfigMap", "shared", env.namespace)
    assert live["data"] == {"owner": "adopted"}
    assert live["metadata"]["labels"]["fleetbus.io/task"] == adopter


# --- resource-policy keep -----------------------------------------------------------------------


async def test_retiring_keeps_a_crd_marked_keep_and_the_custom_resources_in_it(
    env: ControllerEnv, kube_cluster: KubeAPIServer, tmp_path: Path
) -> None:
    group = f"{unique('kept')}.example.com"
    source = tmp_path / "kept"
    source.mkdir()
    (source / "crd.yaml").write_text(
        textwrap.dedent(
            f"""\
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
                    openAPIV3Schema:
                      type: object
                      x-kubernetes-preserve-unknown-fields: true
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: not-kept
            data: {{}}
            """
        )
    )
    name = unique("keeper")
    taskset = normalize(source, NormalizeOptions(name=name, namespace=env.namespace)).taskset
    await env.publish(cluster_task(taskset))
    await env.task_phase(name, "Ready")
    kube_cluster.request(
        "POST",
        f"/apis/{group}/v1/namespaces/{env.namespace}/gadgets",
        {"apiVersion": f"{group}/v1", "kind": "Gadget", "metadata": {"name": "mine"}},
    )

    await env.kube.delete(TASK, name, namespace=env.namespace)
    await env.wait_for("the Task to be gone", lambda: _gone(env, name), 120.0)

    assert await env.get("v1", "ConfigMap", "not-kept", env.namespace) is None
    crd = await env.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", f"gadgets.{group}")
    assert crd is not None
    assert "fleetbus.io/task" not in (crd["metadata"].get("labels") or {})
    assert await env.get(f"{group}/v1", "Gadget", "mine", env.namespace) is not None


# --- the spec: per-object drift, ignore paths, Step Jobs ----------------------------------------

SPEC_SOURCE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "api:1"}]
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

SPEC_FILE = """\
objects:
  - kind: Deployment
    name: api
    ignorePaths: [/spec/replicas]
stepJobs:
  - job: seed
    object: {kind: ConfigMap, name: seed-input}
"""


async def test_the_spec_beside_a_source_sets_drift_per_object_and_runs_a_step_job(
    env: ControllerEnv, kube_cluster: KubeAPIServer, tmp_path: Path
) -> None:
    source = tmp_path / "specced"
    source.mkdir()
    (source / "app.yaml").write_text(SPEC_SOURCE)
    (source / "fleetbus.yaml").write_text(SPEC_FILE)
    name = unique("specced")
    taskset = normalize(source, NormalizeOptions(name=name, namespace=env.namespace)).taskset
    await env.publish(cluster_task(taskset))
    await env.task_phase(name, "Ready")

    # The Step Job ran from the source, as the Step's own restricted account.
    seed = await env.step(
        name,
        "install",
        ObjectRef(api_version="v1", kind="ConfigMap", name="seed-input", namespace=env.namespace),
    )
    account = seed["status"]["serviceAccount"]
    assert account.startswith("fbstep-")
    job = await env.get("batch/v1", "Job", seed["status"]["job"]["name"], env.namespace)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == account
    assert seed["status"]["job"]["state"] == "Complete"
    assert await env.get("batch/v1", "Job", "seed", env.namespace) is None

    ns = env.namespace
    kube_cluster.kubectl("scale", "deployment", "api", "-n", ns, "--replicas=5")
    kube_cluster.kubectl("set", "image", "deployment/api", "-n", ns, "api=api:evil")
    kube_cluster.kubectl("patch", "configmap", "tuning", "-n", ns, "-p", '{"data":{"level":"9"}}')

    async def image_reverted() -> dict[str, Any] | None:
        live = await env.get("apps/v1", "Deployment", "api", ns)
        image = live["spec"]["template"]["spec"]["containers"][0]["image"]
        return live if image == "api:1" else None

    live = await env.wait_for("the image to be reverted", image_reverted)
    assert live["spec"]["replicas"] == 5, "the hand scale stands (ignore path)"

    tuning = ObjectRef(api_version="v1", kind="ConfigMap", name="tuning", namespace=ns)

    async def reported() -> dict[str, Any] | None:
        step = await env.step(name, "install", tuning)
        drift = (step.get("status") or {}).get("drift") or {}
        return drift if drift.get("state") == "Drifted" else None

    drift = await env.wait_for("the report-only drift to be recorded", reported)
    assert drift["fields"] == ["/data/level"]
    assert drift.get("corrected", 0) == 0
    assert (await env.get("v1", "ConfigMap", "tuning", ns))["data"] == {"level": "9"}
