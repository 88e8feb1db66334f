"""Install order: which step of a phase runs first, decided from the objects alone.

The reference is Helm's install order (`kind_sorter.go`), with one deliberate change: a
CustomResourceDefinition moves up to right after Namespace, next to the other things the rest
of a taskset is defined in terms of (Flux applies CRDs and Namespaces in its first stage for the
same reason). Kinds nobody listed go last, in kind order.

Inside a phase the order is total and depends on nothing but the steps:

1. steps placed in the phase without a hook (a chart's `crds/`, objects annotated with
   `fleetbus.io/phase`) before hooks, because Helm installs `crds/` before any hook runs;
2. hooks by stage (a `post-delete` hook runs after every `pre-delete` hook), then by
   `helm.sh/hook-weight`, ascending;
3. then by kind rank (the table below), kind, namespace and name.

A custom resource whose definition is in the same phase always follows it: it never runs at a
lower stage or weight than its CRD, and among equals it sorts after every listed kind. In the
same way an object never runs at a lower stage or weight than the Namespace it lives in. An
object in an earlier phase than its CRD or its Namespace cannot be applied at all;
`misplaced_objects` finds those so the normalizer can refuse them. Removal runs the install
order backwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from taskset.model import PHASES, ObjectRef, Phase, Step, Taskset

INSTALL_ORDER: tuple[str, ...] = (
    "PriorityClass",
    "Namespace",
    "CustomResourceDefinition",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
)

_RANK = {kind: rank for rank, kind in enumerate(INSTALL_ORDER)}
UNLISTED_RANK = len(INSTALL_ORDER)
"""The rank of every kind not in `INSTALL_ORDER`, custom resources included."""

POST_DELETE = "post-delete"


@dataclass(frozen=True, slots=True, order=True)
class GroupKind:
    """An API group and kind, the way a CRD names the resources it defines."""

    group: str
    kind: str

    @classmethod
    def of_ref(cls, ref: ObjectRef) -> GroupKind:
        return cls(ref.group, ref.kind)

    def __str__(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


def install_rank(kind: str) -> int:
    """Position of `kind` in the install order; unlisted kinds share the last rank."""
    return _RANK.get(kind, UNLISTED_RANK)


def defined_kind(step: Step) -> GroupKind | None:
    """The kind a CustomResourceDefinition step defines, or None for any other object."""
    manifest = step.object
    if manifest.get("kind") != "CustomResourceDefinition":
        return None
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        return None
    names = spec.get("names")
    group = spec.get("group")
    if not isinstance(names, dict) or not isinstance(group, str):
        return None
    kind = names.get("kind")
    return GroupKind(group, kind) if isinstance(kind, str) and kind else None


def _stage_and_weight(step: Step) -> tuple[int, int]:
    hook = step.hook
    if hook is None:
        return (0, 0)
    stage = 2 if hook.events and all(event == POST_DELETE for event in hook.events) else 1
    return (stage, hook.weight)


Prerequisite = tuple[str, str, str]
"""What an object needs to exist first: ("kind", group, kind) or ("namespace", "", name)."""


def provided_by(step: Step) -> Prerequisite | None:
    """What a step creates that others may need: a custom kind (CRD) or a namespace."""
    kind = defined_kind(step)
    if kind is not None:
        return ("kind", kind.group, kind.kind)
    ref = step.ref
    if ref.kind == "Namespace" and ref.group == "":
        return ("namespace", "", ref.name)
    return None


def required_by(step: Step) -> list[Prerequisite]:
    """What a step needs: the definition of its kind, and its namespace."""
    ref = step.ref
    needs: list[Prerequisite] = [("kind", ref.group, ref.kind)]
    if ref.namespace:
        needs.append(("namespace", "", ref.namespace))
    return needs


def _phase_key(step: Step, provided: dict[Prerequisite, tuple[int, int]]) -> tuple[object, ...]:
    ref = step.ref
    stage_weight = _stage_and_weight(step)
    rank = install_rank(ref.kind)
    for need in required_by(step):
        if need in provided:
            stage_weight = max(stage_weight, provided[need])
            if need[0] == "kind":
                rank = UNLISTED_RANK
    return (*stage_weight, rank, ref.kind, ref.namespace, ref.name, ref.api_version)


def order_phase(steps: Iterable[Step]) -> list[Step]:
    """The steps of one phase in install order (see the module docstring)."""
    steps = list(steps)
    provided: dict[Prerequisite, tuple[int, int]] = {}
    for step in steps:
        what = provided_by(step)
        if what is not None:
            provided[what] = max(provided.get(what, (0, 0)), _stage_and_weight(step))
    return sorted(steps, key=lambda step: _phase_key(step, provided))


def removal_order(steps: Sequence[Step]) -> list[Step]:
    """The order to delete the objects of phase-ordered steps in: install order backwards."""
    return list(reversed(steps))


def order_taskset(taskset: Taskset) -> Taskset:
    """`taskset` with every phase in install order."""
    return msgspec.structs.replace(
        taskset,
        init=order_phase(taskset.init),
        install=order_phase(taskset.install),
        post_install=order_phase(taskset.post_install),
        pre_delete=order_phase(taskset.pre_delete),
    )


@dataclass(frozen=True, slots=True)
class Misplaced:
    """An object placed in an earlier phase than its CRD or its Namespace is created in."""

    resource: ObjectRef
    phase: Phase
    prerequisite: ObjectRef
    prerequisite_phase: Phase

    def __str__(self) -> str:
        role = "namespace" if self.prerequisite.kind == "Namespace" else "definition"
        return (
            f"{self.resource} is in phase {self.phase}, but its {role} {self.prerequisite} "
            f"is only created in the later phase {self.prerequisite_phase}"
        )


def misplaced_objects(taskset: Taskset) -> list[Misplaced]:
    """Objects that would be applied before their CRD or Namespace exists, across phases."""
    index = {phase: position for position, phase in enumerate(PHASES)}
    first_provided: dict[Prerequisite, tuple[Phase, ObjectRef]] = {}
    for phase, step in taskset.steps():
        what = provided_by(step)
        if what is not None and what not in first_provided:
            first_provided[what] = (phase, step.ref)
    found: list[Misplaced] = []
    for phase, step in taskset.steps():
        for need in required_by(step):
            if need not in first_provided:
                continue
            prerequisite_phase, prerequisite = first_provided[need]
            if index[phase] < index[prerequisite_phase]:
                found.append(Misplaced(step.ref, phase, prerequisite, prerequisite_phase))
    return found
