"""What the controller applies for a Step or a fleetbus Namespace, and how status rolls up."""

from __future__ import annotations

import pytest

from cluster_controller.errors import InvalidManifest
from cluster_controller.manifests import (
    bounded_name,
    namespace_parts,
    step_digest,
    step_job,
    step_job_names,
    step_job_rbac,
    step_object,
)
from cluster_controller.plan import Blocked, PhasePlan
from cluster_controller.rollup import PhaseOutcome, drift_summary, task_status, verdict
from kube_contract.model import (
    Condition,
    DriftStatus,
    NamespaceSpec,
    NetworkPolicyPart,
    StepSpec,
    StepStatus,
    TaskSpec,
    TaskStatus,
    set_condition,
)

JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "migrate"},
    "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "m:1"}]}}},
}


def spec(**changes: object) -> StepSpec:
    base: dict[str, object] = {
        "task": "shop",
        "phase": "install",
        "object": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "conf", "labels": {"app": "shop"}, "resourceVersion": "9"},
            "data": {"a": "1"},
            "status": {"ignored": True},
        },
    }
    base.update(changes)
    return StepSpec(**base)  # type: ignore[arg-type]


def test_an_applied_object_is_labelled_with_its_task_and_step_and_stripped_of_server_fields() -> (
    None
):
    obj = step_object(spec(), step="shop-1a2b", task_namespace="fleetbus-system", namespace="app")

    assert obj["metadata"]["namespace"] == "app"
    assert obj["metadata"]["labels"] == {
        "app": "shop",
        "app.kubernetes.io/managed-by": "fleetbus",
        "fleetbus.io/task": "shop",
        "fleetbus.io/task-namespace": "fleetbus-system",
        "fleetbus.io/step": "shop-1a2b",
    }
    assert "resourceVersion" not in obj["metadata"]
    assert "status" not in obj


def test_a_cluster_scoped_object_gets_no_namespace() -> None:
    cluster_role = spec(
        object={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "reader", "namespace": "stray"},
        }
    )

    obj = step_object(cluster_role, step="s", task_namespace="t", namespace="")

    assert "namespace" not in obj["metadata"]


def test_an_object_without_a_name_is_refused_with_the_step_named() -> None:
    nameless = spec(object={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})

    with pytest.raises(InvalidManifest, match=r"Step s1: the ConfigMap has no metadata\.name"):
        step_object(nameless, step="s1", task_namespace="t", namespace="app")


def test_the_step_digest_ignores_nothing_the_step_asks_for() -> None:
    assert step_digest(spec()) == step_digest(spec())
    assert step_digest(spec()) != step_digest(spec(wait="none"))
    assert step_digest(spec()) != step_digest(spec(job=JOB))


def test_a_changed_job_gets_a_new_name_but_keeps_its_account() -> None:
    first = step_job_names("shop-1a2b", JOB)
    changed = step_job_names("shop-1a2b", {**JOB, "spec": {"backoffLimit": 1}})

    assert first[0] != changed[0]
    assert first[1] == changed[1]
    assert all(len(name) <= 63 for name in (*first, *changed))


def test_the_job_runs_as_the_step_account_in_the_objects_namespace() -> None:
    job = step_job(
        spec(job=JOB),
        step="s",
        task_namespace="t",
        namespace="app",
        service_account="fbstep-s",
        job_name="s-123",
    )

    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "fbstep-s"
    assert pod["restartPolicy"] == "Never"
    assert job["metadata"] == {
        "name": "s-123",
        "namespace": "app",
        "labels": {
            "app.kubernetes.io/managed-by": "fleetbus",
            "fleetbus.io/task": "shop",
            "fleetbus.io/task-namespace": "t",
            "fleetbus.io/step-job": "s",
        },
    }


def test_the_job_role_covers_only_the_objects_kind_in_its_namespace() -> None:
    account, role, binding = step_job_rbac(
        step="s",
        task="shop",
        task_namespace="t",
        namespace="app",
        service_account="fbstep-s",
        target_group="",
        target_plural="configmaps",
    )

    assert account["kind"] == "ServiceAccount"
    assert role["kind"] == "Role"
    assert role["metadata"]["namespace"] == "app"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fbstep-s", "namespace": "app"}
    ]


def test_long_names_are_cut_to_a_dns_label_and_stay_distinct() -> None:
    a = bounded_name("x" * 80, "one")
    b = bounded_name("x" * 80, "two")

    assert len(a) == 63
    assert a != b


def test_a_namespace_comes_first_then_its_parts() -> None:
    parts = namespace_parts(
        "payments",
        NamespaceSpec(
            labels={"team": "p"},
            resource_quota={"hard": {"pods": "3"}},
            network_policies=[NetworkPolicyPart(name="deny", spec={"podSelector": {}})],
        ),
        uid="u1",
    )

    assert [p["kind"] for p in parts] == ["Namespace", "ResourceQuota", "NetworkPolicy"]
    assert parts[0]["metadata"]["labels"] == {
        "team": "p",
        "app.kubernetes.io/managed-by": "fleetbus",
        "fleetbus.io/namespace": "payments",
    }
    assert parts[0]["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert all(p["metadata"].get("namespace") == "payments" for p in parts[1:])


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = set_condition([], Condition(type="Ready", status="False", reason="Waiting"), "t1")
    same = set_condition(first, Condition(type="Ready", status="False", reason="Other"), "t2")
    flipped = set_condition(same, Condition(type="Ready", status="True", reason="Ready"), "t3")

    assert same[0].last_transition_time == "t1"
    assert same[0].reason == "Other"
    assert flipped[0].last_transition_time == "t3"


def test_the_first_unfinished_phase_decides_what_the_task_says() -> None:
    outcomes = [
        PhaseOutcome(phase="init", total=1, ready=1, plan=PhasePlan(complete=True)),
        PhaseOutcome(
            phase="install",
            total=3,
            ready=1,
            plan=PhasePlan(
                waiting=[
                    Blocked(step="s", reason="LessReady", message="Deployment/app/web: Ready: 0/2")
                ]
            ),
        ),
        PhaseOutcome(phase="postInstall", total=1, ready=0),
    ]

    decided = verdict(outcomes)

    assert decided.phase == "Progressing"
    assert decided.current_phase == "install"
    assert decided.message == "waiting for Deployment/app/web: Ready: 0/2"


def test_a_failed_step_fails_the_task_naming_object_and_reason() -> None:
    failing = PhaseOutcome(
        phase="init",
        total=1,
        ready=0,
        failed=1,
        plan=PhasePlan(
            failed=[
                Blocked(
                    step="s",
                    reason="BackoffLimitExceeded",
                    message="Job/ns/seed: failed",
                    object="Job/ns/seed",
                )
            ]
        ),
    )

    status = task_status(
        TaskStatus(),
        TaskSpec(taskset="shop", version=3, generation=4, digest="d"),
        generation=2,
        init=failing,
        tasklet=[],
        tasklet_name="",
        drift=drift_summary([]),
        objects=1,
        deleting=False,
        now="t1",
    )

    assert status.phase == "Failed"
    assert status.failed_object == "Job/ns/seed"
    assert status.reason == "BackoffLimitExceeded"
    assert (status.version, status.generation, status.digest) == (3, 4, "d")
    assert status.observed_generation == 2
    assert [c.type for c in status.conditions if c.status == "True"] == ["Stalled"]


def test_ready_at_is_kept_while_the_task_stays_ready() -> None:
    complete = PhaseOutcome(phase="init", total=0, ready=0, plan=PhasePlan(complete=True))
    spec_ = TaskSpec(taskset="shop")
    first = task_status(
        TaskStatus(),
        spec_,
        generation=1,
        init=complete,
        tasklet=[],
        tasklet_name="shop",
        drift=drift_summary([]),
        objects=0,
        deleting=False,
        now="t1",
    )
    again = task_status(
        first,
        spec_,
        generation=1,
        init=complete,
        tasklet=[],
        tasklet_name="shop",
        drift=drift_summary([]),
        objects=0,
        deleting=False,
        now="t2",
    )

    assert first.ready_at == "t1"
    assert again == first


def test_drift_counts_add_up_over_steps() -> None:
    summary = drift_summary(
        [
            StepStatus(drift=DriftStatus(state="Corrected", detected=2, corrected=2)),
            StepStatus(drift=DriftStatus(state="Drifted", detected=1)),
            StepStatus(),
        ]
    )

    assert (summary.detected, summary.corrected, summary.drifted) == (3, 2, 1)
