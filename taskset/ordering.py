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
lower stage or weight than its CRD, and among equals it sorts after every listed kind. A custom
resource in an earlier phase than its definition cannot be applied at all; `misplaced_resources`
finds those so the normalizer can refuse them. Removal runs the install order backwards.
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


def _phase_key(step: Step, definitions: dict[GroupKind, tuple[int, int]]) -> tuple[object, ...]:
    ref = step.ref
    stage_weight = _stage_and_weight(step)
    rank = install_rank(ref.kind)
    definition = definitions.get(GroupKind.of_ref(ref))
    if definition is not None:
        stage_weight = max(stage_weight, definition)
        rank = UNLISTED_RANK
    return (*stage_weight, rank, ref.kind, ref.namespace, ref.name, ref.api_version)


def order_phase(steps: Iterable[Step]) -> list[Step]:
    """The steps of one phase in install order (see the module docstring)."""
    steps = list(steps)
    definitions: dict[GroupKind, tuple[int, int]] = {}
    for step in steps:
        kind = defined_kind(step)
        if kind is not None:
            definitions[kind] = max(definitions.get(kind, (0, 0)), _stage_and_weight(step))
    return sorted(steps, key=lambda step: _phase_key(step, definitions))


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
class MisplacedResource:
    """A custom resource placed in an earlier phase than the CRD that defines its kind."""

    resource: ObjectRef
    phase: Phase
    definition: ObjectRef
    definition_phase: Phase

    def __str__(self) -> str:
        return (
            f"{self.resource} is in phase {self.phase}, but its definition {self.definition} "
            f"is only created in the later phase {self.definition_phase}"
        )


def misplaced_resources(taskset: Taskset) -> list[MisplacedResource]:
    """Custom resources that would be applied before their CRD exists, across phases."""
    index = {phase: position for position, phase in enumerate(PHASES)}
    first_defined: dict[GroupKind, tuple[Phase, ObjectRef]] = {}
    for phase, step in taskset.steps():
        kind = defined_kind(step)
        if kind is not None and kind not in first_defined:
            first_defined[kind] = (phase, step.ref)
    found: list[MisplacedResource] = []
    for phase, step in taskset.steps():
        ref = step.ref
        definition = first_defined.get(GroupKind.of_ref(ref))
        if definition is None:
            continue
        definition_phase, definition_ref = definition
        if index[phase] < index[definition_phase]:
            found.append(MisplacedResource(ref, phase, definition_ref, definition_phase))
    return found
