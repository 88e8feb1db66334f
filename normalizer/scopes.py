"""Which kinds live in namespaces: built-in kinds, CRDs in the source, the cluster's discovery.

Helm and kubectl ask the cluster (discovery, the REST mapper) whether a kind is namespaced
before they place an object in the release namespace. fleetbus normalizes on the hub, often
before any cluster is known, so it decides from what it can know, in this order:

1. the target cluster's discovery, when the caller has it (`discovered`);
2. a CRD for the kind in the same source (its `spec.scope`);
3. the built-in kinds of Kubernetes (`BUILTIN_NAMESPACED`, `taskset.manifests.CLUSTER_SCOPED`).

A kind none of them knows is a guess: namespaced, except custom kinds named `Cluster...`
(`ClusterIssuer`), which by convention are not. Every guess is named in a note, so the user
learns which objects would move if the guess were wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from taskset.manifests import CLUSTER_SCOPED
from taskset.ordering import GroupKind

BUILTIN_NAMESPACED: frozenset[GroupKind] = frozenset(
    GroupKind(group, kind)
    for group, kinds in {
        "": (
            "Binding",
            "ConfigMap",
            "Endpoints",
            "Event",
            "LimitRange",
            "PersistentVolumeClaim",
            "Pod",
            "PodTemplate",
            "ReplicationController",
            "ResourceQuota",
            "Secret",
            "Service",
            "ServiceAccount",
        ),
        "apps": ("ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"),
        "autoscaling": ("HorizontalPodAutoscaler",),
        "batch": ("CronJob", "Job"),
        "coordination.k8s.io": ("Lease", "LeaseCandidate"),
        "discovery.k8s.io": ("EndpointSlice",),
        "events.k8s.io": ("Event",),
        "networking.k8s.io": ("Ingress", "NetworkPolicy"),
        "policy": ("PodDisruptionBudget",),
        "rbac.authorization.k8s.io": ("Role", "RoleBinding"),
        "storage.k8s.io": ("CSIStorageCapacity",),
        "resource.k8s.io": ("ResourceClaim", "ResourceClaimTemplate"),
        "authorization.k8s.io": ("LocalSubjectAccessReview",),
    }.items()
    for kind in kinds
)
"""Built-in kinds that live in namespaces (the apiserver's discovery, Kubernetes 1.37)."""

ScopeSource = Literal["discovery", "crd", "builtin", "guess"]


@dataclass(frozen=True, slots=True)
class Scope:
    cluster_scoped: bool
    source: ScopeSource


def scope_of(
    group_kind: GroupKind,
    crd_scopes: Mapping[GroupKind, bool],
    discovered: Mapping[GroupKind, bool] | None = None,
) -> Scope:
    """Whether `group_kind` is cluster-scoped, and how that is known (see the docstring)."""
    if discovered is not None and group_kind in discovered:
        return Scope(discovered[group_kind], "discovery")
    if group_kind in crd_scopes:
        return Scope(crd_scopes[group_kind], "crd")
    if group_kind in CLUSTER_SCOPED:
        return Scope(True, "builtin")
    if group_kind in BUILTIN_NAMESPACED:
        return Scope(False, "builtin")
    return Scope(group_kind.group != "" and group_kind.kind.startswith("Cluster"), "guess")
