"""Planning scenarios: which Steps of a phase to apply now, what to wait for, what to remove."""

from __future__ import annotations

from cluster_controller.kstatus import NOT_FOUND, Readiness
from cluster_controller.plan import (
    STAGE_CLASSES,
    STAGE_DEFINITIONS,
    STAGE_WORKLOADS,
    Removal,
    StepState,
    apply_order,
    plan_phase,
    plan_prune,
    removal_order,
    stage_of,
)
from taskset.model import ObjectRef

CURRENT = Readiness(status="Current", reason="Current", message="ok")
WAITING = Readiness(status="InProgress", reason="LessReady", message="Ready: 0/1")
FAILED = Readiness(status="Failed", reason="ProgressDeadlineExceeded", message="deadline")


def ref(kind: str, name: str = "x", api_version: str = "v1") -> ObjectRef:
    return ObjectRef(api_version=api_version, kind=kind, name=name, namespace="app")


CRD = ref("CustomResourceDefinition", "widgets.example.com", "apiextensions.k8s.io/v1")
WIDGET = ref("Widget", "w1", "example.com/v1")
DEPLOYMENT = ref("Deployment", "web", "apps/v1")
SERVICE = ref("Service", "web")
NAMESPACE = ref("Namespace", "app", "fleetbus.io/v1alpha1")
CONFIGMAP = ref("ConfigMap", "settings")
STORAGE_CLASS = ref("StorageClass", "fast", "storage.k8s.io/v1")


def state(
    name: str,
    object_ref: ObjectRef,
    *,
    applied: bool = False,
    completed: bool = False,
    readiness: Readiness | None = None,
) -> StepState:
    return StepState(
        name=name,
        ref=object_ref,
        digest=f"d-{name}",
        applied_digest=f"d-{name}" if applied else "",
        completed_digest=f"d-{name}" if completed else "",
        readiness=readiness,
    )


def test_definitions_go_first_then_classes_then_the_rest() -> None:
    assert stage_of(CRD) == STAGE_DEFINITIONS
    assert stage_of(NAMESPACE) == STAGE_DEFINITIONS
    assert stage_of(ref("Namespace", "core")) == STAGE_DEFINITIONS
    assert stage_of(STORAGE_CLASS) == STAGE_CLASSES
    assert stage_of(DEPLOYMENT) == STAGE_WORKLOADS
    assert stage_of(WIDGET) == STAGE_WORKLOADS


def test_a_fresh_phase_applies_only_its_first_stage() -> None:
    plan = plan_phase([state("cr", WIDGET), state("crd", CRD), state("deploy", DEPLOYMENT)])

    assert plan.apply == ["crd"]
    assert not plan.complete


def test_a_custom_resource_waits_until_its_crd_is_established() -> None:
    not_established = Readiness(status="InProgress", reason="NotEstablished", message="no")
    plan = plan_phase(
        [state("crd", CRD, applied=True, readiness=not_established), state("cr", WIDGET)]
    )

    assert plan.apply == []
    assert [b.step for b in plan.waiting] == ["crd"]
    assert plan.waiting[0].reason == "NotEstablished"


def test_once_the_crd_is_ready_the_next_stage_is_applied_in_helm_order() -> None:
    plan = plan_phase(
        [
            state("crd", CRD, applied=True, readiness=CURRENT),
            state("cr", WIDGET),
            state("deploy", DEPLOYMENT),
            state("svc", SERVICE),
            state("cm", CONFIGMAP),
        ]
    )

    assert plan.apply == ["cm", "svc", "deploy", "cr"]


def test_an_applied_step_not_read_in_this_pass_is_read_before_anything_is_decided() -> None:
    plan = plan_phase([state("deploy", DEPLOYMENT, applied=True)])

    assert plan.read == ["deploy"]
    assert plan.apply == []
    assert not plan.settled


def test_a_step_whose_object_vanished_is_applied_again() -> None:
    plan = plan_phase([state("deploy", DEPLOYMENT, applied=True, readiness=NOT_FOUND)])

    assert plan.apply == ["deploy"]


def test_a_completed_step_is_done_even_if_its_object_is_gone() -> None:
    job = ref("Job", "migrate", "batch/v1")
    plan = plan_phase([state("job", job, applied=True, completed=True, readiness=NOT_FOUND)])

    assert plan.complete
    assert plan.apply == []


def test_a_failed_step_stops_the_phase_and_says_why() -> None:
    plan = plan_phase(
        [
            state("deploy", DEPLOYMENT, applied=True, readiness=FAILED),
            state("svc", SERVICE, applied=True, readiness=CURRENT),
        ]
    )

    assert not plan.complete
    assert [b.step for b in plan.failed] == ["deploy"]
    assert plan.failed[0].reason == "ProgressDeadlineExceeded"
    assert plan.failed[0].object == "Deployment/app/web"


def test_a_missing_step_resource_holds_the_phase() -> None:
    plan = plan_phase([StepState(name="ghost", ref=CONFIGMAP, digest="", missing=True)])

    assert [b.reason for b in plan.waiting] == ["StepMissing"]
    assert not plan.complete


def test_a_phase_of_ready_steps_is_complete_and_settled() -> None:
    plan = plan_phase(
        [
            state("cm", CONFIGMAP, applied=True, readiness=CURRENT),
            state("svc", SERVICE, applied=True, readiness=CURRENT),
        ]
    )

    assert plan.complete
    assert plan.settled


def test_an_empty_phase_is_complete() -> None:
    assert plan_phase([]).complete


def test_a_changed_spec_is_applied_again_even_after_it_completed() -> None:
    changed = StepState(
        name="cm",
        ref=CONFIGMAP,
        digest="new",
        applied_digest="old",
        completed_digest="old",
        readiness=CURRENT,
    )

    assert plan_phase([changed]).apply == ["cm"]


def test_ties_keep_the_order_the_taskset_gave() -> None:
    ordered = apply_order([state("b", ref("ConfigMap", "b")), state("a", ref("ConfigMap", "a"))])

    assert [s.name for s in ordered] == ["b", "a"]


def test_removal_is_the_exact_reverse_of_installation() -> None:
    steps = [
        Removal(name="ns", ref=NAMESPACE, phase="install"),
        Removal(name="crd", ref=CRD, phase="install"),
        Removal(name="cr", ref=WIDGET, phase="install"),
        Removal(name="deploy", ref=DEPLOYMENT, phase="install"),
        Removal(name="svc", ref=SERVICE, phase="install"),
        Removal(name="seed", ref=CONFIGMAP, phase="init"),
        Removal(name="smoke", ref=CONFIGMAP, phase="postInstall"),
    ]

    order = [r.name for r in removal_order(steps)]

    assert order == ["smoke", "cr", "deploy", "svc", "crd", "ns", "seed"]


def test_pruning_removes_only_steps_no_longer_wanted() -> None:
    existing = [
        Removal(name="old-svc", ref=SERVICE, phase="install"),
        Removal(name="keep", ref=CONFIGMAP, phase="install"),
        Removal(name="old-deploy", ref=DEPLOYMENT, phase="install"),
    ]

    stale = plan_prune(["keep"], existing)

    assert [r.name for r in stale] == ["old-deploy", "old-svc"]
