"""Readiness scenarios: what a live object's status says about whether a Step is done.

Each scenario is an object as the apiserver would return it at some moment of its life, and
the kstatus verdict a user of Flux or `kubectl wait` would expect.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cluster_controller.kstatus import (
    Status,
    compute_status,
    finished_job_from_events,
    job_complete,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def deployment(
    *,
    replicas: int | None = 3,
    generation: int = 2,
    observed: int | None = 2,
    status: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if replicas is not None:
        spec["replicas"] = replicas
    body: dict[str, Any] = dict(status or {})
    if observed is not None:
        body["observedGeneration"] = observed
    if conditions is not None:
        body["conditions"] = conditions
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "app", "generation": generation},
        "spec": spec,
        "status": body,
    }


ROLLED_OUT = {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
HEALTHY = [
    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
    {"type": "Available", "status": "True"},
]


def job(conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(status)
    if conditions is not None:
        body["conditions"] = conditions
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "namespace": "app", "generation": 1},
        "spec": {"completions": 1},
        "status": body,
    }


def crd(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com", "generation": 1},
        "status": {"conditions": conditions},
    }


def pod(phase: str | None, **status: Any) -> dict[str, Any]:
    body = dict(status)
    if phase is not None:
        body["phase"] = phase
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "app", "creationTimestamp": "2030-01-01T11:59:00Z"},
        "status": body,
    }


SCENARIOS: list[tuple[str, dict[str, Any] | None, Status]] = [
    ("an object that does not exist is NotFound", None, "NotFound"),
    (
        "an object being deleted is Terminating, whatever its status says",
        {
            **deployment(status=ROLLED_OUT, conditions=HEALTHY),
            "metadata": {"name": "web", "deletionTimestamp": "2030-01-01T00:00:00Z"},
        },
        "Terminating",
    ),
    (
        "a Deployment whose controller has not seen the new generation is InProgress",
        deployment(generation=3, observed=2, status=ROLLED_OUT, conditions=HEALTHY),
        "InProgress",
    ),
    (
        "a Deployment rolled out with every replica available is Current",
        deployment(status=ROLLED_OUT, conditions=HEALTHY),
        "Current",
    ),
    (
        "a Deployment with fewer updated replicas than wanted is InProgress",
        deployment(status={**ROLLED_OUT, "updatedReplicas": 2}, conditions=HEALTHY),
        "InProgress",
    ),
    (
        "a Deployment with old pods still terminating is InProgress",
        deployment(status={**ROLLED_OUT, "replicas": 4}, conditions=HEALTHY),
        "InProgress",
    ),
    (
        "a Deployment that is not yet Available is InProgress",
        deployment(status=ROLLED_OUT, conditions=HEALTHY[:1]),
        "InProgress",
    ),
    (
        "a Deployment past its progress deadline has Failed",
        deployment(
            status=ROLLED_OUT,
            conditions=[
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ],
        ),
        "Failed",
    ),
    (
        "a Deployment without spec.replicas wants one replica",
        deployment(
            replicas=None,
            status={
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
            },
            conditions=HEALTHY,
        ),
        "Current",
    ),
    (
        "a Deployment nobody has looked at (no status) is InProgress",
        deployment(observed=None, status={}),
        "InProgress",
    ),
    (
        "a resource saying Reconciling=True is InProgress",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "status": {"conditions": [{"type": "Reconciling", "status": "True"}]},
        },
        "InProgress",
    ),
    (
        "a resource saying Stalled=True has Failed",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "status": {"conditions": [{"type": "Stalled", "status": "True", "reason": "Broken"}]},
        },
        "Failed",
    ),
    (
        "an unknown kind with no conditions is Current",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
        "Current",
    ),
    (
        "a ConfigMap is Current as soon as it exists",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}},
        "Current",
    ),
    (
        "a Job with Complete=True is Current",
        job([{"type": "Complete", "status": "True"}], succeeded=1, startTime="t"),
        "Current",
    ),
    (
        "a Job with Failed=True has Failed",
        job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}], failed=6),
        "Failed",
    ),
    ("a Job not started yet is InProgress", job(), "InProgress"),
    ("a running Job is Current for kstatus", job(active=1, startTime="t"), "Current"),
    (
        "a CRD with Established=True is Current",
        crd(
            [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]
        ),
        "Current",
    ),
    (
        "a CRD not yet Established is InProgress",
        crd([{"type": "Established", "status": "False"}]),
        "InProgress",
    ),
    (
        "a CRD whose names clash with another has Failed",
        crd([{"type": "NamesAccepted", "status": "False", "message": "name taken"}]),
        "Failed",
    ),
    ("a CRD without conditions is InProgress", crd([]), "InProgress"),
    (
        "a ClusterIP Service is Current",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1"},
        },
        "Current",
    ),
    (
        "a LoadBalancer Service without an ingress address is InProgress",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1"},
            "status": {},
        },
        "InProgress",
    ),
    (
        "a LoadBalancer Service with an ingress IP is Current",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1"},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}},
        },
        "Current",
    ),
    (
        "a bound PVC is Current",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "d"},
            "status": {"phase": "Bound"},
        },
        "Current",
    ),
    (
        "a pending PVC is InProgress",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "d"},
            "status": {"phase": "Pending"},
        },
        "InProgress",
    ),
    (
        "a running, ready Pod is Current",
        pod("Running", conditions=[{"type": "Ready", "status": "True"}]),
        "Current",
    ),
    (
        "a Pod whose container is in CrashLoopBackOff has Failed",
        pod(
            "Running",
            containerStatuses=[
                {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ],
        ),
        "Failed",
    ),
    ("a Pod that succeeded is Current", pod("Succeeded"), "Current"),
    ("a Pod that failed has Failed", pod("Failed"), "Failed"),
    ("a Pod without a phase is InProgress", pod(None), "InProgress"),
    (
        "a Pod unschedulable for longer than the scheduling window has Failed",
        pod(
            "Pending",
            conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        ),
        "Failed",
    ),
    (
        "a StatefulSet with every replica current and ready on the update revision is Current",
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {"replicas": 2},
            "status": {
                "replicas": 2,
                "readyReplicas": 2,
                "currentReplicas": 2,
                "updatedReplicas": 2,
                "currentRevision": "r1",
                "updateRevision": "r1",
            },
        },
        "Current",
    ),
    (
        "a StatefulSet still moving to a new revision is InProgress",
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {"replicas": 2},
            "status": {
                "replicas": 2,
                "readyReplicas": 2,
                "currentReplicas": 2,
                "updatedReplicas": 1,
                "currentRevision": "r1",
                "updateRevision": "r2",
            },
        },
        "InProgress",
    ),
    (
        "a partitioned StatefulSet whose partition is updated is Current",
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 3,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            },
            "status": {
                "replicas": 3,
                "readyReplicas": 3,
                "currentReplicas": 2,
                "updatedReplicas": 1,
            },
        },
        "Current",
    ),
    (
        "a DaemonSet with no desired count yet is InProgress",
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"}, "status": {}},
        "InProgress",
    ),
    (
        "a DaemonSet running everywhere it should is Current",
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent"},
            "status": {
                "desiredNumberScheduled": 3,
                "currentNumberScheduled": 3,
                "updatedNumberScheduled": 3,
                "numberAvailable": 3,
                "numberReady": 3,
            },
        },
        "Current",
    ),
    (
        "a ReplicaSet with a ReplicaFailure condition is InProgress",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "rs"},
            "spec": {"replicas": 1},
            "status": {"conditions": [{"type": "ReplicaFailure", "status": "True"}]},
        },
        "InProgress",
    ),
    (
        "a fleetbus Namespace not yet reported Ready is InProgress",
        {"apiVersion": "fleetbus.io/v1alpha1", "kind": "Namespace", "metadata": {"name": "app"}},
        "InProgress",
    ),
    (
        "a fleetbus Namespace with Ready=True is Current",
        {
            "apiVersion": "fleetbus.io/v1alpha1",
            "kind": "Namespace",
            "metadata": {"name": "app", "generation": 1},
            "status": {
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
        "Current",
    ),
]


@pytest.mark.parametrize(("scenario", "obj", "expected"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_readiness_scenario(scenario: str, obj: dict[str, Any] | None, expected: Status) -> None:
    assert compute_status(obj, NOW).status == expected, scenario


def test_a_pod_unschedulable_for_a_moment_is_still_in_progress() -> None:
    unschedulable = pod(
        "Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    )
    created = datetime(2030, 1, 1, 11, 59, tzinfo=UTC)
    just_created = created + timedelta(seconds=5)

    assert compute_status(unschedulable, just_created).status == "InProgress"


def test_a_step_job_waits_for_complete_even_while_kstatus_calls_it_current() -> None:
    running = job(active=1, startTime="2030-01-01T00:00:00Z")

    assert compute_status(running, NOW).status == "Current"
    assert job_complete(running, NOW).status == "InProgress"
    assert job_complete(job([{"type": "Complete", "status": "True"}]), NOW).status == "Current"
    assert job_complete(job([{"type": "Failed", "status": "True"}]), NOW).status == "Failed"


def test_messages_say_what_is_missing() -> None:
    readiness = compute_status(
        deployment(status={**ROLLED_OUT, "readyReplicas": 1}, conditions=HEALTHY), NOW
    )

    assert readiness.message == "Ready: 1/3"
    assert readiness.reason == "LessReady"


# --- a Job removed right after it finished (ttlSecondsAfterFinished) ------------------------


def _event(reason: str, message: str = "") -> dict[str, Any]:
    return {"kind": "Event", "type": "Normal", "reason": reason, "message": message}


def test_a_removed_job_whose_events_say_completed_succeeded() -> None:
    events = [_event("SuccessfulCreate", "Created pod: x-1"), _event("Completed", "Job completed")]

    verdict = finished_job_from_events(events)

    assert verdict is not None
    assert verdict.current


def test_a_removed_job_whose_events_say_backoff_limit_exceeded_failed_with_that_reason() -> None:
    events = [
        _event("SuccessfulCreate", "Created pod: x-1"),
        _event("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
    ]

    verdict = finished_job_from_events(events)

    assert verdict is not None
    assert verdict.failed
    assert verdict.reason == "BackoffLimitExceeded"


def test_a_removed_job_whose_events_say_nothing_final_has_no_verdict() -> None:
    assert finished_job_from_events([_event("SuccessfulCreate", "Created pod: x-1")]) is None
    assert finished_job_from_events([]) is None
