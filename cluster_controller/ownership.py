"""Who owns an object in the cluster, and whether a Task may apply over it. Pure.

Every object the controller applies carries labels naming its Task (`fleetbus.io/task`,
`fleetbus.io/task-namespace`) and Step, and is applied under the Task's own field manager. Before
a Step's object is applied, the live object (if any) is judged here:

* no live object, or one labelled with this Task: apply;
* labelled with another Task: a conflict naming that taskset, unless the Step says `adopt`;
* present but not applied by fleetbus at all: a conflict ("exists already"), unless `adopt`.

A conflict fails the Step (and with it the Task, so the hub hears `TaskFailed` naming the
owner) and leaves the object untouched. Adopting relabels the object and takes its fields over
with a forced apply. Removal deletes only what carries this Step's label, and never an object
annotated `helm.sh/resource-policy: keep` (`keeps_object`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from kube_contract.model import (
    LABEL_MANAGED_BY,
    LABEL_STEP,
    LABEL_TASK,
    LABEL_TASK_NAMESPACE,
    MANAGED_BY,
    RESOURCE_POLICY_ANNOTATION,
)


class Owner(msgspec.Struct, frozen=True, kw_only=True):
    task: str
    namespace: str = ""


class OwnershipVerdict(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    adopting: bool = False
    """The object is someone else's (or nobody's) and is being taken over."""
    owner: Owner | None = None
    message: str = ""


def _labels(live: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = (live.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, Mapping) else {}


def owner_of(live: Mapping[str, Any]) -> Owner | None:
    """The Task that applied `live`, from its labels; None if fleetbus did not apply it."""
    labels = _labels(live)
    task = labels.get(LABEL_TASK)
    if not task or labels.get(LABEL_MANAGED_BY) != MANAGED_BY or not labels.get(LABEL_STEP):
        return None
    return Owner(task=str(task), namespace=str(labels.get(LABEL_TASK_NAMESPACE) or ""))


def judge_ownership(
    live: Mapping[str, Any] | None,
    *,
    task: str,
    task_namespace: str,
    adopt: bool,
    what: str,
) -> OwnershipVerdict:
    """Whether Task `task_namespace/task` may apply over `live` (see the module docstring)."""
    if live is None:
        return OwnershipVerdict(allowed=True)
    owner = owner_of(live)
    if owner is not None and owner.task == task and owner.namespace in ("", task_namespace):
        return OwnershipVerdict(allowed=True, owner=owner)
    if adopt:
        return OwnershipVerdict(allowed=True, adopting=True, owner=owner)
    if owner is not None:
        return OwnershipVerdict(
            allowed=False,
            owner=owner,
            message=f"{what} is owned by taskset {owner.task}; it is left untouched (adopt "
            "takes it over: fleetbus.io/adopt, or adopt in fleetbus.yaml)",
        )
    return OwnershipVerdict(
        allowed=False,
        message=f"{what} exists already and was not applied by fleetbus; it is left untouched "
        "(adopt takes it over: fleetbus.io/adopt, or adopt in fleetbus.yaml)",
    )


def keeps_object(*manifests: Mapping[str, Any] | None) -> bool:
    """Whether any of the manifests (desired or live) says `helm.sh/resource-policy: keep`."""
    for manifest in manifests:
        if manifest is None:
            continue
        annotations = (manifest.get("metadata") or {}).get("annotations") or {}
        if isinstance(annotations, Mapping) and (
            str(annotations.get(RESOURCE_POLICY_ANNOTATION, "")).strip().lower() == "keep"
        ):
            return True
    return False
