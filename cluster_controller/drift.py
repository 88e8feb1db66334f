"""Drift: has someone changed what we applied? Pure comparisons and the decisions that follow.

Never hash whole live objects: controllers write status, defaults and annotations all the time.
What the controller owns is exactly the set of fields in the manifest it applied, so drift is
judged on those fields only, in two steps:

1. A cheap check on every watch event (no request): does the live object's projection onto the
   manifest's paths still equal the manifest, and does our field manager still own every field
   it applied (`metadata.managedFields`)? Either failing makes the object a *suspect*. The check
   may raise false alarms (the apiserver normalises `cpu: 0.5` to `500m`, fills defaults into
   list items), never misses a changed value.
2. A suspect is confirmed by a server-side dry-run apply with force: what the object *would be*
   after our apply, projected onto our paths, is compared with the live object. Only the paths
   that differ there are drift; normalisation and other managers' additions cancel out.

Ignore paths are JSON pointers (`/spec/replicas`, `*` matches one segment, a prefix covers what
is below it; `kube_contract.drift.is_ignored`). They are never reported, and a correction keeps
the live value at them, so an HPA and the controller do not fight over `spec.replicas`. What a
policy makes of a confirmed observation is `kube_contract.drift.judge_drift`, the same decision
the edge connector takes; this module keeps the Step's drift status (`decide_step_drift`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from kube_contract.drift import escape, is_ignored, judge_drift, split_pointer
from kube_contract.model import DriftStatus

_UNTRACKED = {"apiVersion", "kind", "status"}
"""Top-level fields that are not drift: identity and the object's own status."""
_UNTRACKED_METADATA = {
    "name",
    "namespace",
    "generateName",
    "managedFields",
    "resourceVersion",
}


def _tracked_keys(desired: Mapping[str, Any], path: str) -> list[str]:
    if path == "":
        return [k for k in desired if k not in _UNTRACKED]
    if path == "/metadata":
        return [k for k in desired if k not in _UNTRACKED_METADATA]
    return list(desired)


def _values_equal(desired: Any, live: Any) -> bool:
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live or (type(desired) is type(live) and desired == live)
    return bool(desired == live)


def projection_diff(desired: Any, live: Any, path: str = "") -> list[str]:
    """JSON pointers where `live` differs from `desired` on `desired`'s own paths.

    Maps are compared key by key on `desired`'s keys only (extra live keys are somebody else's
    defaults or fields); lists of the same length element by element, lists of another length
    as a whole.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [path or "/"]
        paths: list[str] = []
        for key in _tracked_keys(desired, path):
            value = desired[key]
            child = f"{path}/{escape(str(key))}"
            if value is None:
                if live.get(key) is not None:
                    paths.append(child)
                continue
            if key not in live:
                paths.append(child)
                continue
            paths.extend(projection_diff(value, live[key], child))
        return paths
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path or "/"]
        paths = []
        for index, (d, item) in enumerate(zip(desired, live, strict=True)):
            paths.extend(projection_diff(d, item, f"{path}/{index}"))
        return paths
    return [] if _values_equal(desired, live) else [path or "/"]


def project(obj: Any, shape: Any) -> Any:
    """`obj` cut down to the paths of `shape`: the part of `obj` that `shape` speaks about."""
    if isinstance(shape, Mapping) and isinstance(obj, Mapping):
        return {k: project(obj[k], v) for k, v in shape.items() if k in obj}
    if isinstance(shape, list) and isinstance(obj, list) and len(shape) == len(obj):
        return [project(o, s) for o, s in zip(obj, shape, strict=True)]
    return obj


def manager_fields(live: Mapping[str, Any], manager: str) -> dict[str, Any] | None:
    """The union of `fieldsV1` the manager holds through `Apply` operations; None if none."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    merged: dict[str, Any] | None = None
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1")
        if isinstance(fields, Mapping):
            merged = _merge_fields(merged or {}, fields)
    return merged


def _merge_fields(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(a)
    for key, value in b.items():
        if key in result and isinstance(result[key], dict) and isinstance(value, Mapping):
            result[key] = _merge_fields(result[key], value)
        else:
            result[key] = dict(value) if isinstance(value, Mapping) else value
    return result


def lost_ownership(
    desired: Mapping[str, Any], owned: Mapping[str, Any], path: str = ""
) -> list[str]:
    """Paths of `desired` that our field manager no longer owns.

    Maps are followed key by key; a list is checked for presence only (its items are keyed by
    merge keys the schema knows, which this check does not need to: values are compared by
    `projection_diff`).
    """
    lost: list[str] = []
    for key in _tracked_keys(desired, path):
        value = desired[key]
        if value is None:
            continue
        child = f"{path}/{escape(str(key))}"
        entry = owned.get(f"f:{key}")
        if entry is None:
            lost.append(child)
            continue
        if isinstance(value, Mapping) and value and isinstance(entry, Mapping):
            lost.extend(lost_ownership(value, entry, child))
    return lost


def suspect_fields(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    *,
    manager: str,
    ignore_paths: Sequence[str],
) -> list[str]:
    """The cheap check: paths that look changed (values or ownership), ignore paths removed."""
    paths = set(projection_diff(desired, live))
    owned = manager_fields(live, manager)
    if owned is not None:
        paths.update(lost_ownership(desired, owned))
    return sorted(p for p in paths if not is_ignored(p, ignore_paths))


def proven_fields(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    *,
    manager: str,
    ignore_paths: Sequence[str],
) -> list[str]:
    """Drift the managed fields prove, no dry-run needed: paths whose value differs from ours
    *and* whose ownership our field manager lost (someone else wrote them). A value that only
    looks different (the apiserver normalised `0.5` to `500m`) is still ours, so it is not
    here and goes to the dry-run; a field we lost with the same value is not drift."""
    owned = manager_fields(live, manager)
    if owned is None:
        return []
    changed = set(projection_diff(desired, live))
    lost = set(lost_ownership(desired, owned))
    proven = {path for path in changed if any(_covers(cut, path) for cut in lost)}
    return sorted(p for p in proven if not is_ignored(p, ignore_paths))


def _covers(prefix: str, path: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def confirmed_fields(
    desired: Mapping[str, Any],
    dry_run: Mapping[str, Any],
    live: Mapping[str, Any],
    *,
    ignore_paths: Sequence[str],
) -> list[str]:
    """Drift proper: where the object after our (dry-run) apply would differ from the live one."""
    would_be = project(dry_run, desired)
    paths = projection_diff(would_be, live) if isinstance(would_be, Mapping) else ["/"]
    return sorted(p for p in set(paths) if not is_ignored(p, ignore_paths))


def _matching_paths(node: Any, pattern: list[str], prefix: list[str]) -> list[list[str]]:
    if not pattern:
        return [prefix]
    head, rest = pattern[0], pattern[1:]
    if isinstance(node, Mapping):
        keys = list(node) if head == "*" else ([head] if head in node else [])
        return [p for k in keys for p in _matching_paths(node[k], rest, [*prefix, str(k)])]
    if isinstance(node, list):
        if head == "*":
            indexes = range(len(node))
        elif head.isdigit() and int(head) < len(node):
            indexes = range(int(head), int(head) + 1)
        else:
            indexes = range(0)
        return [p for i in indexes for p in _matching_paths(node[i], rest, [*prefix, str(i)])]
    return []


def _get(node: Any, parts: list[str]) -> tuple[bool, Any]:
    for part in parts:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def respect_ignored(
    manifest: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    ignore_paths: Sequence[str],
) -> dict[str, Any]:
    """The manifest to apply over an existing object: ignored paths take the live value.

    Where the live object has no value at an ignored path, the path is left out, so the
    controller never fights whoever owns it. A new object (no `live`) gets the manifest as is.
    """
    result: dict[str, Any] = copy.deepcopy(dict(manifest))
    if live is None:
        return result
    for pattern in ignore_paths:
        for parts in _matching_paths(result, split_pointer(pattern), []):
            found, value = _get(live, parts)
            parent_found, parent = _get(result, parts[:-1])
            if not parent_found or not parts:
                continue
            last = parts[-1]
            if isinstance(parent, dict):
                if found:
                    parent[last] = copy.deepcopy(value)
                else:
                    parent.pop(last, None)
            elif isinstance(parent, list) and found:
                parent[int(last)] = copy.deepcopy(value)
    return result


# --- decisions on a Step's drift status --------------------------------------------------------


class StepDriftDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What to do about a confirmed observation, and the Step's drift status afterwards."""

    status: DriftStatus
    detected: bool
    """A new detection to announce (status counters moved, an Event is due)."""
    correct: bool
    """Re-apply with force now."""


def decide_step_drift(
    current: DriftStatus,
    *,
    fields: Sequence[str],
    deleted: bool,
    policy: str,
    now: str,
) -> StepDriftDecision:
    """Count a drift once, however many watch events show it; correct or report it as
    `judge_drift` says.

    With policy `report` a drift stays `Drifted` until someone reverts it (then `InSync`); the
    same fields seen again are not a new detection. With `correct` every observation is followed
    by a correction. With `ignore` nothing is recorded.
    """
    verdict = judge_drift(policy, fields=fields, deleted=deleted)
    unchanged = StepDriftDecision(status=current, detected=False, correct=False)
    if policy == "ignore":
        return unchanged
    if not verdict.drifted:
        if current.state == "Drifted" and policy == "report":
            return StepDriftDecision(
                status=msgspec.structs.replace(current, state="InSync"),
                detected=False,
                correct=False,
            )
        return unchanged
    same_as_before = (
        current.state == "Drifted"
        and list(current.fields) == list(fields)
        and current.deleted == deleted
    )
    if same_as_before and policy == "report":
        return unchanged
    status = msgspec.structs.replace(
        current,
        state="Drifted",
        detected=current.detected + 1,
        fields=list(fields),
        deleted=deleted,
        last_detected_at=now,
    )
    return StepDriftDecision(status=status, detected=True, correct=verdict.correct)


def record_correction(current: DriftStatus, now: str) -> DriftStatus:
    return msgspec.structs.replace(
        current,
        state="Corrected",
        corrected=current.corrected + 1,
        last_corrected_at=now,
    )


def describe_fields(fields: Sequence[str], deleted: bool) -> str:
    if deleted:
        return "object deleted"
    shown = ", ".join(fields[:8])
    more = f" and {len(fields) - 8} more" if len(fields) > 8 else ""
    return f"changed {shown}{more}"
