"""The objects the controller applies, built from Steps and fleetbus Namespaces. Pure.

Every applied object carries labels naming its Task and Step, so drift watches can select
exactly what the controller applied (a label selector per kind) and trace an event back to the
Step that owns the object. A Step's Job runs as a ServiceAccount made for that Step alone, bound
to a Role in the Step's namespace: it can work on the Step's kind of object there and nowhere
else.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from cluster_controller.errors import InvalidManifest
from kube_contract.model import (
    API_VERSION,
    LABEL_MANAGED_BY,
    LABEL_NAMESPACE_OWNER,
    LABEL_STEP,
    LABEL_STEP_JOB,
    LABEL_TASK,
    LABEL_TASK_NAMESPACE,
    MANAGED_BY,
    NamespaceSpec,
    StepSpec,
)
from taskset.digest import digest_of
from taskset.model import ObjectRef

MAX_NAME = 63


def step_digest(spec: StepSpec) -> str:
    """Digest of what a Step asks for: equal digests mean applying again changes nothing.

    `adopt` counts only when set, so turning it on tries a Step refused over a conflict again
    (and digests of Steps written before it existed stay as they were)."""
    asked: dict[str, object] = {"object": spec.object, "job": spec.job, "wait": spec.wait}
    if spec.adopt:
        asked["adopt"] = True
    return digest_of(asked)


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def bounded_name(prefix: str, unique: str) -> str:
    """`<prefix>-<hash>` cut to a DNS label (63 characters), always ending alphanumeric."""
    suffix = short_hash(unique)
    head = prefix[: MAX_NAME - len(suffix) - 1].rstrip("-.")
    return f"{head}-{suffix}" if head else suffix


def owner_labels(task: str, task_namespace: str, step: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TASK: task,
        LABEL_TASK_NAMESPACE: task_namespace,
        LABEL_STEP: step,
    }


def namespaced(kind_is_namespaced: bool, ref: ObjectRef, default_namespace: str) -> str:
    """The namespace an object goes to: its own, else the taskset's; none if cluster-scoped."""
    if not kind_is_namespaced:
        return ""
    return ref.namespace or default_namespace


def step_object(
    spec: StepSpec,
    *,
    step: str,
    task_namespace: str,
    namespace: str,
) -> dict[str, Any]:
    """The Step's object as it is applied: labelled, in its namespace, without server fields."""
    obj = copy.deepcopy(spec.object)
    if not obj.get("apiVersion") or not obj.get("kind"):
        raise InvalidManifest(f"Step {step}: the object has no apiVersion or kind")
    metadata = obj.setdefault("metadata", {})
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise InvalidManifest(f"Step {step}: the {obj['kind']} has no metadata.name")
    for server_field in (
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "generation",
        "selfLink",
        "deletionTimestamp",
    ):
        metadata.pop(server_field, None)
    obj.pop("status", None)
    if namespace:
        metadata["namespace"] = namespace
    else:
        metadata.pop("namespace", None)
    labels = metadata.get("labels") or {}
    metadata["labels"] = {**labels, **owner_labels(spec.task, task_namespace, step)}
    return obj


def step_job_names(step: str, job: dict[str, Any]) -> tuple[str, str]:
    """(Job name, ServiceAccount name) for a Step's Job; a changed Job gets a new name."""
    job_name = bounded_name(step, "job:" + digest_of(job))
    account = bounded_name(f"fbstep-{step}", "sa:" + step)
    return job_name, account


def step_job(
    spec: StepSpec,
    *,
    step: str,
    task_namespace: str,
    namespace: str,
    service_account: str,
    job_name: str,
) -> dict[str, Any]:
    """The Step's Job, renamed per content (Jobs are immutable) and run as the Step's account."""
    if spec.job is None:
        raise InvalidManifest(f"Step {step} has no Job")
    job = copy.deepcopy(spec.job)
    job["apiVersion"] = job.get("apiVersion") or "batch/v1"
    job["kind"] = job.get("kind") or "Job"
    if job["kind"] != "Job":
        raise InvalidManifest(f"Step {step}: `job` must be a Job, not a {job['kind']}")
    metadata = job.setdefault("metadata", {})
    metadata["name"] = job_name
    metadata["namespace"] = namespace
    for server_field in (
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ):
        metadata.pop(server_field, None)
    job.pop("status", None)
    metadata["labels"] = {
        **(metadata.get("labels") or {}),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TASK: spec.task,
        LABEL_TASK_NAMESPACE: task_namespace,
        LABEL_STEP_JOB: step,
    }
    pod_spec = job.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    pod_spec["serviceAccountName"] = service_account
    pod_spec.setdefault("restartPolicy", "Never")
    return job


def step_job_rbac(
    *,
    step: str,
    task: str,
    task_namespace: str,
    namespace: str,
    service_account: str,
    target_group: str,
    target_plural: str,
) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for a Step's Job, all in the Step's namespace.

    The Role lets the Job work on the Step's kind of object in that namespace and nothing more;
    RBAC being namespaced, the account is denied everything in every other namespace.
    """
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TASK: task,
        LABEL_TASK_NAMESPACE: task_namespace,
        LABEL_STEP_JOB: step,
    }
    meta = {"name": service_account, "namespace": namespace, "labels": labels}
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": [target_group],
            "resources": [target_plural],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": dict(meta),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(meta),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": service_account,
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": service_account,
                    "namespace": namespace,
                }
            ],
        },
    ]


QUOTA_NAME = "fleetbus-quota"
LIMITS_NAME = "fleetbus-limits"


def namespace_parts(name: str, spec: NamespaceSpec, uid: str) -> list[dict[str, Any]]:
    """The core Namespace and every part a fleetbus Namespace asks for, in apply order."""
    owner_label = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_NAMESPACE_OWNER: name}
    owner_ref = {
        "apiVersion": API_VERSION,
        "kind": "Namespace",
        "name": name,
        "uid": uid,
    }
    parts: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {**spec.labels, **owner_label},
                "annotations": dict(spec.annotations),
                "ownerReferences": [owner_ref],
            },
        }
    ]

    def part_meta(part_name: str) -> dict[str, Any]:
        return {"name": part_name, "namespace": name, "labels": dict(owner_label)}

    if spec.resource_quota is not None:
        parts.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": part_meta(QUOTA_NAME),
                "spec": copy.deepcopy(spec.resource_quota),
            }
        )
    if spec.limit_range is not None:
        parts.append(
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": part_meta(LIMITS_NAME),
                "spec": copy.deepcopy(spec.limit_range),
            }
        )
    parts.extend(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": part_meta(policy.name),
            "spec": copy.deepcopy(policy.spec),
        }
        for policy in spec.network_policies
    )
    parts.extend(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": part_meta(role.name),
            "rules": copy.deepcopy(role.rules),
        }
        for role in spec.rbac.roles
    )
    parts.extend(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": part_meta(binding.name),
            "roleRef": copy.deepcopy(binding.role_ref),
            "subjects": copy.deepcopy(binding.subjects),
        }
        for binding in spec.rbac.role_bindings
    )
    return parts
