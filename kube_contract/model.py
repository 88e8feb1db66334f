"""fleetbus's custom resources as typed data: Task, Tasklet, Step and Namespace.

The CRDs in `cluster_controller/crds/` are the contract between whoever writes these objects
(the edge connector's Kubernetes executor, or a person with kubectl) and the cluster controller
that reconciles them; this module is that contract in Python, imported by both sides. The
controller decodes specs from the apiserver's JSON into frozen Structs and writes statuses back
as plain JSON; the connector decodes what it reads back (`read_task_view`, `read_step_view`:
the statuses typed, the rest tolerant of objects written by hand).

Sizes: etcd refuses objects over ~1.5 MB, so no resource holds a whole taskset. A Step holds
one object (and at most one Job); a Task and its Tasklet hold only the names of their Steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import msgspec

from kube_contract.errors import UnreadableResource
from taskset.model import DriftPolicy, HookInfo, ObjectRef, Phase, WaitPolicy

GROUP = "fleetbus.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

FIELD_MANAGER = "fleetbus-controller"
"""The field manager of the controller's own resources (statuses, Tasklets, Step Jobs)."""
FIELD_MANAGER_PREFIX = "fleetbus:"
RESOURCE_POLICY_ANNOTATION = "helm.sh/resource-policy"
"""`keep` on an object: removing its taskset leaves it in the cluster (Helm's meaning)."""


def task_field_manager(task: str) -> str:
    """The field manager a Task's objects are applied with: one per taskset, so the apiserver's
    managedFields say which taskset set which field."""
    return f"{FIELD_MANAGER_PREFIX}{task}"


FINALIZER = "fleetbus.io/cleanup"

LABEL_TASK = "fleetbus.io/task"
LABEL_TASK_NAMESPACE = "fleetbus.io/task-namespace"
LABEL_STEP = "fleetbus.io/step"
LABEL_GENERATION = "fleetbus.io/generation"
"""On a Step: the ClusterTask generation it was written for (by the connector)."""
LABEL_STEP_JOB = "fleetbus.io/step-job"
"""On a Step's Job and its ServiceAccount, Role and RoleBinding: the Step they serve."""
LABEL_NAMESPACE_OWNER = "fleetbus.io/namespace"
"""On the parts of a fleetbus Namespace (quota, limits, policies, RBAC): the Namespace's name."""
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "fleetbus"

ResourcePhase = Literal["Pending", "Progressing", "Ready", "Failed", "Deleting"]
StepPhase = Literal["Pending", "Applied", "Ready", "Failed", "Deleting"]
DriftState = Literal["InSync", "Drifted", "Corrected"]


# --- specs (written by the executor or a person; read here) ------------------------------------


class StepSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One object to server-side apply (and optionally a Job to run against it), then wait."""

    task: str
    phase: Phase
    object: dict[str, Any]
    job: dict[str, Any] | None = None
    wait: WaitPolicy = "ready"
    hook: HookInfo | None = None
    drift_policy: DriftPolicy | None = msgspec.field(default=None, name="driftPolicy")
    """This object's drift policy; None follows the Task's."""
    ignore_paths: list[str] = msgspec.field(default_factory=list, name="ignorePaths")
    """JSON pointers drift leaves alone on this object, beside the Task's."""
    adopt: bool = False
    """Take the object over if it exists unmanaged or owned by another Task."""

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef.of(self.object)


class TaskletSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Names of Steps (in the Tasklet's namespace), phase by phase, each list in apply order."""

    init: list[str] = msgspec.field(default_factory=list)
    install: list[str] = msgspec.field(default_factory=list)
    post_install: list[str] = msgspec.field(default_factory=list, name="postInstall")
    pre_delete: list[str] = msgspec.field(default_factory=list, name="preDelete")

    def phase(self, phase: Phase) -> list[str]:
        match phase:
            case "init":
                return self.init
            case "install":
                return self.install
            case "postInstall":
                return self.post_install
            case "preDelete":
                return self.pre_delete

    def all_steps(self) -> list[str]:
        return [*self.init, *self.install, *self.post_install, *self.pre_delete]


class TaskletTemplate(msgspec.Struct, frozen=True, kw_only=True):
    spec: TaskletSpec = msgspec.field(default_factory=TaskletSpec)


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One application bundle on this cluster: a ClusterTask, by reference to its Steps.

    `init` runs before the Tasklet is made from `template`; `pre_delete` runs after the Tasklet
    has been torn down, before the Task's own objects go.
    """

    taskset: str
    version: int = 0
    generation: int = 0
    digest: str = ""
    namespace: str = ""
    drift_policy: DriftPolicy = msgspec.field(default="correct", name="driftPolicy")
    ignore_paths: list[str] = msgspec.field(default_factory=list, name="ignorePaths")
    init: list[str] = msgspec.field(default_factory=list)
    template: TaskletTemplate = msgspec.field(default_factory=TaskletTemplate)
    pre_delete: list[str] = msgspec.field(default_factory=list, name="preDelete")

    def all_steps(self) -> list[str]:
        return [*self.init, *self.template.spec.all_steps(), *self.pre_delete]


class NetworkPolicyPart(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    spec: dict[str, Any]


class RolePart(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    rules: list[dict[str, Any]] = msgspec.field(default_factory=list)


class RoleBindingPart(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role_ref: dict[str, Any] = msgspec.field(name="roleRef")
    subjects: list[dict[str, Any]] = msgspec.field(default_factory=list)


class RbacPart(msgspec.Struct, frozen=True, kw_only=True):
    roles: list[RolePart] = msgspec.field(default_factory=list)
    role_bindings: list[RoleBindingPart] = msgspec.field(default_factory=list, name="roleBindings")


class NamespaceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A namespace and the parts that make it usable, created, updated and deleted together."""

    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    resource_quota: dict[str, Any] | None = msgspec.field(default=None, name="resourceQuota")
    limit_range: dict[str, Any] | None = msgspec.field(default=None, name="limitRange")
    network_policies: list[NetworkPolicyPart] = msgspec.field(
        default_factory=list, name="networkPolicies"
    )
    rbac: RbacPart = msgspec.field(default_factory=RbacPart)


# --- statuses (written here) -------------------------------------------------------------------


class Condition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str = msgspec.field(default="", name="lastTransitionTime")
    observed_generation: int = msgspec.field(default=0, name="observedGeneration")


JobPhase = Literal["Pending", "Running", "Complete", "Failed"]


class JobState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: str
    state: JobPhase = "Pending"
    message: str = ""


class DriftStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Drift of one Step's object. Counters only grow, so a reader can tell new drift from old."""

    state: DriftState = "InSync"
    detected: int = 0
    corrected: int = 0
    fields: list[str] = msgspec.field(default_factory=list)
    """The JSON pointers that differed at the last detection."""
    deleted: bool = False
    """The last detection was the object's deletion."""
    last_detected_at: str = msgspec.field(default="", name="lastDetectedAt")
    last_corrected_at: str = msgspec.field(default="", name="lastCorrectedAt")


class StepStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    phase: StepPhase = "Pending"
    observed_generation: int = msgspec.field(default=0, name="observedGeneration")
    object: ObjectRef | None = None
    uid: str = ""
    applied_digest: str = msgspec.field(default="", name="appliedDigest")
    """Digest of the spec that was last applied; equal to the spec's digest means up to date."""
    applied_at: str = msgspec.field(default="", name="appliedAt")
    completed_digest: str = msgspec.field(default="", name="completedDigest")
    """Digest of the spec whose object (and Job) last became ready: a finished Job stays done."""
    rejected_digest: str = msgspec.field(default="", name="rejectedDigest")
    """Digest of a spec the apiserver refused to apply: not tried again until the spec changes."""
    ready: bool = False
    reason: str = ""
    message: str = ""
    job: JobState | None = None
    service_account: str = msgspec.field(default="", name="serviceAccount")
    drift: DriftStatus = msgspec.field(default_factory=DriftStatus)
    conditions: list[Condition] = msgspec.field(default_factory=list)


class StepCounts(msgspec.Struct, frozen=True, kw_only=True):
    total: int = 0
    ready: int = 0
    failed: int = 0


class DriftSummary(msgspec.Struct, frozen=True, kw_only=True):
    detected: int = 0
    corrected: int = 0
    drifted: int = 0
    """Steps whose object is drifted right now (not yet corrected, or policy `report`)."""
    reported: int = 0
    """Of those, the Steps under policy `report`: drifted, and to stay so (no correction)."""


class TaskletStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    phase: ResourcePhase = "Pending"
    observed_generation: int = msgspec.field(default=0, name="observedGeneration")
    current_phase: str = msgspec.field(default="", name="currentPhase")
    progress: str = ""
    steps: StepCounts = msgspec.field(default_factory=StepCounts)
    phases: dict[str, StepCounts] = msgspec.field(default_factory=dict)
    failed_step: str = msgspec.field(default="", name="failedStep")
    reason: str = ""
    message: str = ""
    drift: DriftSummary = msgspec.field(default_factory=DriftSummary)
    conditions: list[Condition] = msgspec.field(default_factory=list)


class ReleaseStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The Task as a Helm release on this cluster: `.Release.Revision` and install vs upgrade."""

    revision: int = 0
    """1 for the first spec applied on this cluster, one more for every new spec digest."""
    digest: str = ""
    """The spec digest `revision` is for."""
    upgrade: bool = False
    """This revision is an upgrade: an earlier one became Ready (else it is an install)."""
    deployed: int = 0
    """The last revision that became Ready (0: none yet)."""


class TaskStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    phase: ResourcePhase = "Pending"
    observed_generation: int = msgspec.field(default=0, name="observedGeneration")
    version: int = 0
    generation: int = 0
    digest: str = ""
    """The ClusterTask digest this status describes (the spec's digest once observed)."""
    current_phase: str = msgspec.field(default="", name="currentPhase")
    progress: str = ""
    steps: StepCounts = msgspec.field(default_factory=StepCounts)
    objects: int = 0
    tasklet: str = ""
    failed_step: str = msgspec.field(default="", name="failedStep")
    failed_object: str = msgspec.field(default="", name="failedObject")
    reason: str = ""
    message: str = ""
    drift: DriftSummary = msgspec.field(default_factory=DriftSummary)
    ready_at: str = msgspec.field(default="", name="readyAt")
    release: ReleaseStatus = msgspec.field(default_factory=ReleaseStatus)
    conditions: list[Condition] = msgspec.field(default_factory=list)


class PartStatus(msgspec.Struct, frozen=True, kw_only=True):
    ready: bool = False
    count: int = 0
    message: str = ""


class NamespaceParts(msgspec.Struct, frozen=True, kw_only=True):
    namespace: PartStatus = msgspec.field(default_factory=PartStatus)
    resource_quota: PartStatus = msgspec.field(default_factory=PartStatus, name="resourceQuota")
    limit_range: PartStatus = msgspec.field(default_factory=PartStatus, name="limitRange")
    network_policies: PartStatus = msgspec.field(default_factory=PartStatus, name="networkPolicies")
    rbac: PartStatus = msgspec.field(default_factory=PartStatus)


class NamespaceStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    phase: ResourcePhase = "Pending"
    observed_generation: int = msgspec.field(default=0, name="observedGeneration")
    parts: NamespaceParts = msgspec.field(default_factory=NamespaceParts)
    reason: str = ""
    message: str = ""
    conditions: list[Condition] = msgspec.field(default_factory=list)


# --- resources: metadata + spec + status -------------------------------------------------------


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of ObjectMeta the controller reads."""

    name: str
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = msgspec.field(default="", name="resourceVersion")
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    finalizers: list[str] = msgspec.field(default_factory=list)
    deletion_timestamp: str | None = msgspec.field(default=None, name="deletionTimestamp")

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None


class StepResource(msgspec.Struct, frozen=True, kw_only=True):
    metadata: Meta
    spec: StepSpec
    status: StepStatus = msgspec.field(default_factory=StepStatus)


class TaskletResource(msgspec.Struct, frozen=True, kw_only=True):
    metadata: Meta
    spec: TaskletSpec = msgspec.field(default_factory=TaskletSpec)
    status: TaskletStatus = msgspec.field(default_factory=TaskletStatus)


class TaskResource(msgspec.Struct, frozen=True, kw_only=True):
    metadata: Meta
    spec: TaskSpec
    status: TaskStatus = msgspec.field(default_factory=TaskStatus)


class NamespaceResource(msgspec.Struct, frozen=True, kw_only=True):
    metadata: Meta
    spec: NamespaceSpec = msgspec.field(default_factory=NamespaceSpec)
    status: NamespaceStatus = msgspec.field(default_factory=NamespaceStatus)


# --- what the edge connector reads back (statuses typed, everything else optional) ---------------


V = TypeVar("V", bound=msgspec.Struct)


class ObservedMeta(msgspec.Struct, frozen=True, kw_only=True):
    """The parts of ObjectMeta the connector reads; nothing is required."""

    name: str = ""
    uid: str = ""
    generation: int = 0
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


class TaskSpecView(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str = ""


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    metadata: ObservedMeta = msgspec.field(default_factory=ObservedMeta)
    spec: TaskSpecView = msgspec.field(default_factory=TaskSpecView)
    status: TaskStatus = msgspec.field(default_factory=TaskStatus)


class StepSpecView(msgspec.Struct, frozen=True, kw_only=True):
    task: str = ""
    object: dict[str, Any] = msgspec.field(default_factory=dict)
    drift_policy: DriftPolicy | None = msgspec.field(default=None, name="driftPolicy")
    ignore_paths: list[str] = msgspec.field(default_factory=list, name="ignorePaths")


class StepView(msgspec.Struct, frozen=True, kw_only=True):
    metadata: ObservedMeta = msgspec.field(default_factory=ObservedMeta)
    spec: StepSpecView = msgspec.field(default_factory=StepSpecView)
    status: StepStatus = msgspec.field(default_factory=StepStatus)


def _view(obj: Mapping[str, Any], view: type[V], kind: str) -> V:
    try:
        return msgspec.convert(obj, view, strict=False)
    except msgspec.ValidationError as e:
        name = (obj.get("metadata") or {}).get("name") or "?"
        raise UnreadableResource(f"{kind} {name}: {e}") from e


def read_task_view(obj: Mapping[str, Any]) -> TaskView:
    """A Task as the connector reads it; raises `UnreadableResource` for a malformed status."""
    return _view(obj, TaskView, "Task")


def read_step_view(obj: Mapping[str, Any]) -> StepView:
    """A Step as the connector reads it; raises `UnreadableResource` for a malformed status."""
    return _view(obj, StepView, "Step")


def decode_step(obj: dict[str, Any]) -> StepResource:
    return msgspec.convert(obj, StepResource)


def decode_tasklet(obj: dict[str, Any]) -> TaskletResource:
    return msgspec.convert(obj, TaskletResource)


def decode_task(obj: dict[str, Any]) -> TaskResource:
    return msgspec.convert(obj, TaskResource)


def decode_namespace(obj: dict[str, Any]) -> NamespaceResource:
    return msgspec.convert(obj, NamespaceResource)


def status_body(status: msgspec.Struct) -> dict[str, Any]:
    """The JSON form of a status Struct, as written to the status subresource."""
    body: dict[str, Any] = msgspec.to_builtins(status)
    return body


def set_condition(conditions: list[Condition], new: Condition, now: str) -> list[Condition]:
    """Conditions with `new` replacing its type; the transition time moves only on a change."""
    result: list[Condition] = []
    placed = False
    for existing in conditions:
        if existing.type != new.type:
            result.append(existing)
            continue
        placed = True
        keep_time = existing.status == new.status and existing.last_transition_time
        result.append(
            msgspec.structs.replace(
                new,
                last_transition_time=existing.last_transition_time if keep_time else now,
            )
        )
    if not placed:
        result.append(msgspec.structs.replace(new, last_transition_time=now))
    return result


def readiness_conditions(
    existing: list[Condition],
    *,
    phase: ResourcePhase | StepPhase,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """`Ready`, `Reconciling` and `Stalled` in the kstatus convention, so generic tools agree."""
    ready = phase == "Ready"
    failed = phase == "Failed"
    conditions = set_condition(
        existing,
        Condition(
            type="Ready",
            status="True" if ready else "False",
            reason=reason or phase,
            message=message,
            observed_generation=generation,
        ),
        now,
    )
    conditions = set_condition(
        conditions,
        Condition(
            type="Reconciling",
            status="False" if ready or failed else "True",
            reason=reason or phase,
            message="" if ready or failed else message,
            observed_generation=generation,
        ),
        now,
    )
    return set_condition(
        conditions,
        Condition(
            type="Stalled",
            status="True" if failed else "False",
            reason=reason or phase,
            message=message if failed else "",
            observed_generation=generation,
        ),
        now,
    )
