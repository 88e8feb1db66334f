"""Readiness of live Kubernetes objects: the kstatus rules, re-implemented as pure functions.

A Step is done when its object is ready, and "ready" has to mean the same thing Flux, Argo CD
and `kubectl wait` users expect. The reference is kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus`,
Go, no maintained Python port); its rules are applied here in its order:

1. `metadata.deletionTimestamp` set → Terminating;
2. `status.observedGeneration` present and behind `metadata.generation` → InProgress;
3. condition `Reconciling=True` → InProgress, `Stalled=True` → Failed;
4. the kind's own rule (Deployment, StatefulSet, DaemonSet, ReplicaSet, Pod, Job, PVC, CRD,
   Service, PodDisruptionBudget), else Current.

Two deliberate differences from kstatus: a LoadBalancer Service waits for an ingress IP or
hostname (not only a cluster IP), and fleetbus' own kinds (group `fleetbus.io`) need their
`Ready` condition to be True, so a Step holding a fleetbus Namespace waits for its quota, limits
and policies. A Job in progress is Current for kstatus; `job_complete` is the stricter
question a Step with a Job asks.

Time is a parameter: a Pending Pod turns Failed once it has been unschedulable for longer than
the scheduling window, measured against `now`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

Status = Literal["Current", "InProgress", "Failed", "Terminating", "NotFound"]

FLEETBUS_GROUP = "fleetbus.io"
UNSCHEDULABLE_WINDOW = timedelta(seconds=15)
"""How long kstatus lets a Pod sit unschedulable before calling it Failed."""


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """What a live object's status says: one of kstatus' statuses, with a reason and message."""

    status: Status
    reason: str = ""
    message: str = ""

    @property
    def current(self) -> bool:
        return self.status == "Current"

    @property
    def failed(self) -> bool:
        return self.status == "Failed"


NOT_FOUND = Readiness(status="NotFound", reason="NotFound", message="object does not exist")


def _current(message: str) -> Readiness:
    return Readiness(status="Current", reason="Current", message=message)


def _in_progress(reason: str, message: str) -> Readiness:
    return Readiness(status="InProgress", reason=reason, message=message)


def _failed(reason: str, message: str) -> Readiness:
    return Readiness(status="Failed", reason=reason, message=message)


def _field(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _int(obj: Mapping[str, Any], path: str, default: int) -> int:
    value = _field(obj, path)
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def _str(obj: Mapping[str, Any], path: str, default: str = "") -> str:
    value = _field(obj, path)
    return value if isinstance(value, str) else default


def _conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    conditions = _field(obj, "status.conditions")
    if not isinstance(conditions, list):
        return []
    return [c for c in conditions if isinstance(c, Mapping)]


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The status condition of type `kind`, if the object has one."""
    for c in _conditions(obj):
        if c.get("type") == kind:
            return c
    return None


def _is_true(obj: Mapping[str, Any], kind: str) -> bool:
    c = condition(obj, kind)
    return c is not None and c.get("status") == "True"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def compute_status(obj: Mapping[str, Any] | None, now: datetime) -> Readiness:
    """The readiness of a live object (as returned by the apiserver); None means it is absent."""
    if obj is None:
        return NOT_FOUND
    generic = _generic_status(obj)
    if generic is not None:
        return generic
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0]
    kind = str(obj.get("kind", ""))
    rule = _RULES.get((group, kind))
    if rule is not None:
        return rule(obj, now)
    if group == FLEETBUS_GROUP:
        return _ready_condition(obj)
    return _current("Resource is current")


def _generic_status(obj: Mapping[str, Any]) -> Readiness | None:
    if _field(obj, "metadata.deletionTimestamp"):
        return Readiness(
            status="Terminating",
            reason="Terminating",
            message="Resource scheduled for deletion",
        )
    generation = _field(obj, "metadata.generation")
    observed = _field(obj, "status.observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed != generation:
        return _in_progress(
            "LatestGenerationNotObserved",
            f"{obj.get('kind', 'Resource')} generation is {generation}, "
            f"but latest observed generation is {observed}",
        )
    reconciling = condition(obj, "Reconciling")
    if reconciling is not None and reconciling.get("status") == "True":
        return _in_progress(
            str(reconciling.get("reason") or "Reconciling"),
            str(reconciling.get("message") or ""),
        )
    stalled = condition(obj, "Stalled")
    if stalled is not None and stalled.get("status") == "True":
        return _failed(str(stalled.get("reason") or "Stalled"), str(stalled.get("message") or ""))
    return None


def _deployment(obj: Mapping[str, Any], now: datetime) -> Readiness:
    progressing = False
    available = False
    for c in _conditions(obj):
        if c.get("type") == "Progressing":
            if c.get("reason") == "ProgressDeadlineExceeded":
                return _failed("ProgressDeadlineExceeded", "Progress deadline exceeded")
            if c.get("status") == "True" and c.get("reason") == "NewReplicaSetAvailable":
                progressing = True
        elif c.get("type") == "Available" and c.get("status") == "True":
            available = True
    spec_replicas = _int(obj, "spec.replicas", 1)
    replicas = _int(obj, "status.replicas", 0)
    updated = _int(obj, "status.updatedReplicas", 0)
    ready = _int(obj, "status.readyReplicas", 0)
    available_replicas = _int(obj, "status.availableReplicas", 0)
    if spec_replicas > replicas:
        return _in_progress("LessReplicas", f"Replicas: {replicas}/{spec_replicas}")
    if spec_replicas > updated:
        return _in_progress("LessUpdated", f"Updated: {updated}/{spec_replicas}")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"Pending termination: {replicas - spec_replicas}")
    if updated > available_replicas:
        return _in_progress("LessAvailable", f"Available: {available_replicas}/{updated}")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{spec_replicas}")
    if not progressing:
        return _in_progress("ReplicaSetNotAvailable", "ReplicaSet not Available")
    if not available:
        return _in_progress("DeploymentNotAvailable", "Deployment not Available")
    return _current(f"Deployment is available. Replicas: {replicas}")


def _statefulset(obj: Mapping[str, Any], now: datetime) -> Readiness:
    if _str(obj, "spec.updateStrategy.type") == "OnDelete":
        return _current("StatefulSet is using the ondelete update strategy")
    spec_replicas = _int(obj, "spec.replicas", 1)
    ready = _int(obj, "status.readyReplicas", 0)
    current = _int(obj, "status.currentReplicas", 0)
    updated = _int(obj, "status.updatedReplicas", 0)
    replicas = _int(obj, "status.replicas", 0)
    partition = _int(obj, "spec.updateStrategy.rollingUpdate.partition", -1)
    if spec_replicas > replicas:
        return _in_progress("LessReplicas", f"Replicas: {replicas}/{spec_replicas}")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{spec_replicas}")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"Pending termination: {replicas - spec_replicas}")
    if partition != -1:
        if updated < spec_replicas - partition:
            return _in_progress("LessUpdated", f"updated: {updated}/{spec_replicas - partition}")
        return _current(f"Partitioned roll out complete. updated: {updated}")
    if spec_replicas > current:
        return _in_progress("LessCurrent", f"current: {current}/{spec_replicas}")
    current_revision = _str(obj, "status.currentRevision")
    update_revision = _str(obj, "status.updateRevision")
    if current_revision != update_revision:
        return _in_progress(
            "RevisionMismatch",
            f"Waiting for updated revision {update_revision} to match current {current_revision}",
        )
    return _current(f"All replicas scheduled as expected. Replicas: {replicas}")


def _daemonset(obj: Mapping[str, Any], now: datetime) -> Readiness:
    desired = _int(obj, "status.desiredNumberScheduled", -1)
    current = _int(obj, "status.currentNumberScheduled", 0)
    updated = _int(obj, "status.updatedNumberScheduled", 0)
    available = _int(obj, "status.numberAvailable", 0)
    ready = _int(obj, "status.numberReady", 0)
    if desired == -1:
        return _in_progress("NoDesiredNumber", "Missing .status.desiredNumberScheduled")
    if desired > current:
        return _in_progress("LessCurrent", f"Current: {current}/{desired}")
    if desired > updated:
        return _in_progress("LessUpdated", f"Updated: {updated}/{desired}")
    if desired > available:
        return _in_progress("LessAvailable", f"Available: {available}/{desired}")
    if desired > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{desired}")
    return _current(f"All replicas scheduled as expected. Replicas: {desired}")


def _replicaset(obj: Mapping[str, Any], now: datetime) -> Readiness:
    if _is_true(obj, "ReplicaFailure"):
        return _in_progress("ReplicaFailure", "Replica Failure condition. Check Pods")
    spec_replicas = _int(obj, "spec.replicas", 1)
    replicas = _int(obj, "status.replicas", 0)
    ready = _int(obj, "status.readyReplicas", 0)
    available = _int(obj, "status.availableReplicas", 0)
    labelled = _int(obj, "status.fullyLabeledReplicas", 0)
    if spec_replicas > labelled:
        return _in_progress("LessLabelled", f"Labelled: {labelled}/{spec_replicas}")
    if spec_replicas > available:
        return _in_progress("LessAvailable", f"Available: {available}/{spec_replicas}")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{spec_replicas}")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"Pending termination: {replicas - spec_replicas}")
    return _current(f"ReplicaSet is available. Replicas: {replicas}")


def _pod(obj: Mapping[str, Any], now: datetime) -> Readiness:
    phase = _str(obj, "status.phase")
    if phase == "Succeeded":
        return _current("Pod has completed successfully")
    if phase == "Failed":
        return _failed("PodFailed", "Pod has completed, but not successfully")
    if phase == "Running":
        if _is_true(obj, "Ready"):
            return _current("Pod is Ready")
        crashing = _crash_looping_containers(obj)
        if crashing:
            return _failed(
                "ContainerCrashLooping",
                f"Containers in CrashLoop state: {', '.join(crashing)}",
            )
        return _in_progress("PodRunningNotReady", "Pod is running but is not Ready")
    if phase == "Pending":
        scheduled = condition(obj, "PodScheduled")
        if (
            scheduled is not None
            and scheduled.get("status") == "False"
            and scheduled.get("reason") == "Unschedulable"
        ):
            created = _parse_time(_field(obj, "metadata.creationTimestamp"))
            if created is not None and now > created + UNSCHEDULABLE_WINDOW:
                return _failed("PodUnschedulable", "Pod could not be scheduled")
            return _in_progress("PodNotScheduled", "Pod has not been scheduled")
        return _in_progress("PodPending", "Pod is in the Pending phase")
    return _in_progress("PodPhaseUnknown", "Pod phase not available")


def _crash_looping_containers(obj: Mapping[str, Any]) -> list[str]:
    statuses = _field(obj, "status.containerStatuses")
    if not isinstance(statuses, list):
        return []
    return [
        str(s.get("name", ""))
        for s in statuses
        if isinstance(s, Mapping) and _str(s, "state.waiting.reason") == "CrashLoopBackOff"
    ]


def _job(obj: Mapping[str, Any], now: datetime) -> Readiness:
    parallelism = _int(obj, "spec.parallelism", 1)
    completions = _int(obj, "spec.completions", parallelism)
    succeeded = _int(obj, "status.succeeded", 0)
    active = _int(obj, "status.active", 0)
    failed = _int(obj, "status.failed", 0)
    for c in _conditions(obj):
        if c.get("type") == "Complete" and c.get("status") == "True":
            return _current(f"Job Completed. succeeded: {succeeded}/{completions}")
        if c.get("type") == "Failed" and c.get("status") == "True":
            reason = str(c.get("reason") or "JobFailed")
            detail = str(c.get("message") or "")
            message = f"Job Failed. failed: {failed}/{completions}"
            return _failed(reason, f"{message}: {detail}" if detail else message)
    if not _str(obj, "status.startTime"):
        return _in_progress("JobNotStarted", "Job not started")
    return _current(f"Job in progress. success:{succeeded}, active: {active}, failed: {failed}")


def job_complete(obj: Mapping[str, Any] | None, now: datetime) -> Readiness:
    """Stricter than kstatus for Jobs: Current only once `Complete=True`, Failed on `Failed=True`.

    A Step that runs a Job (or whose object is a Job with `wait: complete`) asks this.
    """
    status = compute_status(obj, now)
    if obj is None or status.status != "Current":
        return status
    if _is_true(obj, "Complete"):
        return status
    return _in_progress("JobNotComplete", status.message or "Job has not completed")


JOB_FAILURE_EVENTS = frozenset(
    {"BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy", "MaxFailedIndexesExceeded"}
)
"""Warning Events the Job controller records when it marks a Job Failed, named by reason."""


def finished_job_from_events(events: Iterable[Mapping[str, Any]]) -> Readiness | None:
    """How a Job that no longer exists ended, from the Events the Job controller left behind.

    A Job with `ttlSecondsAfterFinished` (ingress-nginx's admission Jobs use 0) is deleted by
    the TTL controller the moment it finishes, often before a reconcile pass sees it finished.
    Its Events outlive it: `Completed` means it succeeded, a failure reason that it failed.
    None when the Events say neither (it was deleted before finishing, or they expired).
    """
    for event in events:
        reason = str(event.get("reason") or "")
        message = str(event.get("message") or "")
        if reason == "Completed":
            return _current(f"Job Completed and was removed after finishing: {message}")
        if reason in JOB_FAILURE_EVENTS:
            return _failed(reason, f"Job Failed and was removed after finishing: {message}")
    return None


def _pvc(obj: Mapping[str, Any], now: datetime) -> Readiness:
    phase = _str(obj, "status.phase")
    if phase != "Bound":
        return _in_progress("NotBound", f"PVC is not Bound. phase: {phase}")
    return _current("PVC is Bound")


def _crd(obj: Mapping[str, Any], now: datetime) -> Readiness:
    for c in _conditions(obj):
        if c.get("type") == "NamesAccepted" and c.get("status") == "False":
            return _failed("NamesNotAccepted", str(c.get("message") or "CRD names not accepted"))
        if c.get("type") == "Established":
            if c.get("status") == "True":
                return _current("CRD is established")
            return _in_progress("NotEstablished", "CRD is not established")
    return _in_progress("InstallInProgress", "Install in progress")


def _service(obj: Mapping[str, Any], now: datetime) -> Readiness:
    if _str(obj, "spec.type", "ClusterIP") == "LoadBalancer":
        if not _str(obj, "spec.clusterIP"):
            return _in_progress("NoIPAssigned", "ClusterIP not set. Service type: LoadBalancer")
        ingress = _field(obj, "status.loadBalancer.ingress")
        if not isinstance(ingress, list) or not any(
            isinstance(i, Mapping) and (i.get("ip") or i.get("hostname")) for i in ingress
        ):
            return _in_progress("NoIngress", "LoadBalancer has no ingress IP or hostname yet")
    return _current("Service is ready")


def _pdb(obj: Mapping[str, Any], now: datetime) -> Readiness:
    current = _int(obj, "status.currentHealthy", 0)
    desired = _int(obj, "status.desiredHealthy", 0)
    if current < desired:
        return _in_progress(
            "BudgetNotMet", f"Budget not met. healthy replicas: {current}/{desired}"
        )
    return _current(f"Budget is met. healthy replicas: {current}/{desired}")


def _ready_condition(obj: Mapping[str, Any]) -> Readiness:
    ready = condition(obj, "Ready")
    if ready is not None and ready.get("status") == "True":
        return _current(str(ready.get("message") or "Ready"))
    if ready is None:
        return _in_progress("NotObserved", "waiting for the controller to report Ready")
    return _in_progress(str(ready.get("reason") or "NotReady"), str(ready.get("message") or ""))


_RULES = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("", "Pod"): _pod,
    ("batch", "Job"): _job,
    ("", "PersistentVolumeClaim"): _pvc,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("", "Service"): _service,
    ("policy", "PodDisruptionBudget"): _pdb,
}
