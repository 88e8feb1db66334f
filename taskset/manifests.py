"""What makes one Kubernetes manifest acceptable in a Taskset, checked before anything is applied.

A cluster would refuse these objects one at a time, halfway through a rollout; checking them
when a taskset is normalized refuses the whole taskset at publish instead, with the file and
field at fault. The checks mirror the apiserver's own: `apiVersion`, `kind` and `metadata.name`
present; names of the form the kind requires (DNS-1123 subdomain for most, DNS-1123 label for
Namespaces and Services, a path segment for RBAC objects); labels and annotations as strings.

Scope (namespaced or cluster-wide) is decided here too, because the normalizer must put
namespaced objects into the taskset's namespace and must not give cluster-scoped ones one.
Everything is pure: the functions return problems as sentences and leave raising to the caller,
which knows which file the manifest came from.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from taskset.model import ObjectRef
from taskset.ordering import GroupKind

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_LABEL = 63
MAX_SUBDOMAIN = 253

LABEL_NAMED_KINDS = frozenset({"Namespace", "Service"})
"""Kinds whose names must be DNS-1123 labels (no dots, at most 63 characters)."""

PATH_SEGMENT_NAMED = frozenset(
    {
        GroupKind("rbac.authorization.k8s.io", "Role"),
        GroupKind("rbac.authorization.k8s.io", "ClusterRole"),
        GroupKind("rbac.authorization.k8s.io", "RoleBinding"),
        GroupKind("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    }
)
"""Kinds whose names only need to be a URL path segment (e.g. `system:aggregate-to-view`)."""

CLUSTER_SCOPED: frozenset[GroupKind] = frozenset(
    GroupKind(group, kind)
    for group, kinds in {
        "": ("Namespace", "Node", "PersistentVolume", "ComponentStatus"),
        "apiextensions.k8s.io": ("CustomResourceDefinition",),
        "apiregistration.k8s.io": ("APIService",),
        "rbac.authorization.k8s.io": ("ClusterRole", "ClusterRoleBinding"),
        "scheduling.k8s.io": ("PriorityClass",),
        "storage.k8s.io": (
            "StorageClass",
            "CSIDriver",
            "CSINode",
            "VolumeAttachment",
            "VolumeAttributesClass",
        ),
        "networking.k8s.io": ("IngressClass", "IPAddress", "ServiceCIDR"),
        "node.k8s.io": ("RuntimeClass",),
        "policy": ("PodSecurityPolicy",),
        "admissionregistration.k8s.io": (
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
        ),
        "certificates.k8s.io": ("CertificateSigningRequest", "ClusterTrustBundle"),
        "flowcontrol.apiserver.k8s.io": ("FlowSchema", "PriorityLevelConfiguration"),
        "resource.k8s.io": ("DeviceClass", "ResourceSlice"),
    }.items()
    for kind in kinds
)
"""Built-in kinds that live outside namespaces."""


def is_cluster_scoped(ref: ObjectRef, crd_scopes: Mapping[GroupKind, bool]) -> bool:
    """Whether objects of `ref`'s kind live outside namespaces.

    `crd_scopes` says it for custom kinds whose CRD is in the same taskset (True = cluster
    scope). Other custom kinds are taken as namespaced, except kinds named `Cluster...`
    (`ClusterIssuer`, `ClusterPolicy`, `ClusterSecretStore`), which by convention are not;
    an explicit `metadata.namespace` on an object is never changed either way.
    """
    group_kind = GroupKind.of_ref(ref)
    if group_kind in CLUSTER_SCOPED:
        return True
    if group_kind in crd_scopes:
        return crd_scopes[group_kind]
    return ref.group != "" and ref.kind.startswith("Cluster")


def crd_scopes(manifests: Iterable[Mapping[str, Any]]) -> dict[GroupKind, bool]:
    """The kinds defined by the CRDs among `manifests`, mapped to True when cluster-scoped."""
    scopes: dict[GroupKind, bool] = {}
    for manifest in manifests:
        if manifest.get("kind") != "CustomResourceDefinition":
            continue
        spec = manifest.get("spec")
        if not isinstance(spec, dict):
            continue
        names = spec.get("names")
        group = spec.get("group")
        kind = names.get("kind") if isinstance(names, dict) else None
        if isinstance(group, str) and isinstance(kind, str):
            scopes[GroupKind(group, kind)] = spec.get("scope") == "Cluster"
    return scopes


def dns_label_problem(value: str) -> str | None:
    if len(value) > MAX_LABEL:
        return f"is {len(value)} characters long, the limit is {MAX_LABEL}"
    if not _DNS_LABEL.match(value):
        return (
            "must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def dns_subdomain_problem(value: str) -> str | None:
    if len(value) > MAX_SUBDOMAIN:
        return f"is {len(value)} characters long, the limit is {MAX_SUBDOMAIN}"
    if not _DNS_SUBDOMAIN.match(value):
        return (
            "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def path_segment_problem(value: str) -> str | None:
    if value in (".", ".."):
        return f"may not be {value!r}"
    for forbidden in ("/", "%"):
        if forbidden in value:
            return f"may not contain {forbidden!r}"
    return None


def name_problem(ref: ObjectRef) -> str | None:
    """Why `ref.name` is not a valid name for its kind, or None."""
    group_kind = GroupKind.of_ref(ref)
    if group_kind in PATH_SEGMENT_NAMED:
        return path_segment_problem(ref.name)
    if ref.group == "" and ref.kind in LABEL_NAMED_KINDS:
        return dns_label_problem(ref.name)
    return dns_subdomain_problem(ref.name)


def manifest_problems(manifest: Mapping[str, Any]) -> list[str]:
    """Everything wrong with `manifest` as an object to apply, as sentences naming the field."""
    problems: list[str] = []
    for field in ("apiVersion", "kind"):
        value = manifest.get(field)
        if value is None or value == "":
            problems.append(f"{field} is missing")
        elif not isinstance(value, str):
            problems.append(f"{field} must be a string, not {type(value).__name__}")
    metadata = manifest.get("metadata")
    if metadata is None:
        problems.append("metadata is missing (metadata.name is required)")
        return problems
    if not isinstance(metadata, dict):
        problems.append(f"metadata must be a mapping, not {type(metadata).__name__}")
        return problems
    name = metadata.get("name")
    if name is None or name == "":
        if metadata.get("generateName"):
            problems.append(
                "metadata.name is missing (metadata.generateName cannot be applied "
                "declaratively: give the object a name)"
            )
        else:
            problems.append("metadata.name is missing")
    elif not isinstance(name, str):
        problems.append(f"metadata.name must be a string, not {type(name).__name__}")
    namespace = metadata.get("namespace")
    if namespace not in (None, ""):
        if not isinstance(namespace, str):
            problems.append(f"metadata.namespace must be a string, not {type(namespace).__name__}")
        elif (problem := dns_label_problem(namespace)) is not None:
            problems.append(f"metadata.namespace {namespace!r} {problem}")
    for field in ("labels", "annotations"):
        problems.extend(_string_map_problems(metadata.get(field), f"metadata.{field}"))
    if problems:
        return problems
    ref = ObjectRef.of(dict(manifest))
    if (problem := name_problem(ref)) is not None:
        problems.append(f"metadata.name {ref.name!r} {problem}")
    if ref.kind == "CustomResourceDefinition":
        problems.extend(_crd_problems(ref.name, manifest.get("spec")))
    return problems


def _string_map_problems(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"{field} must be a mapping, not {type(value).__name__}"]
    return [
        f"{field}[{key!r}] must be a string, not {type(item).__name__} (quote the value)"
        for key, item in value.items()
        if not isinstance(item, str)
    ]


def _crd_problems(name: str, spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return ["spec is missing"]
    names = spec.get("names")
    group = spec.get("group")
    if not isinstance(group, str) or not group:
        return ["spec.group is missing"]
    if not isinstance(names, dict) or not names.get("kind") or not names.get("plural"):
        return ["spec.names.kind and spec.names.plural are required"]
    expected = f"{names['plural']}.{group}"
    if name != expected:
        return [f"metadata.name must be {expected!r} (spec.names.plural + '.' + spec.group)"]
    return []


def duplicate_refs(refs: Iterable[ObjectRef]) -> list[ObjectRef]:
    """Refs that occur more than once, by API group, kind, namespace and name, sorted."""
    refs = list(refs)
    counts = Counter(_identity(ref) for ref in refs)
    repeated: dict[tuple[str, str, str, str], ObjectRef] = {}
    for ref in refs:
        identity = _identity(ref)
        if counts[identity] > 1:
            repeated.setdefault(identity, ref)
    return sorted(repeated.values())


def _identity(ref: ObjectRef) -> tuple[str, str, str, str]:
    """Two versions of one group (apps/v1, apps/v1beta2) name the same object."""
    return (ref.group, ref.kind, ref.namespace, ref.name)
