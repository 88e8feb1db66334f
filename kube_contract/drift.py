"""The drift policy, decided once for both edge sides: which changes count, and what to do.

A taskset says how its objects' drift is handled (`driftPolicy`): `correct` re-applies,
`report` only tells, `ignore` does neither; its `ignorePaths` (JSON pointers, `*` matching one
segment, a prefix covering what is below it) are never drift at all, so an HPA and fleetbus do
not fight over `spec.replicas`. The cluster controller judges the drift it confirms on a Step
(and keeps the Step's drift status); the edge connector judges what it reports to the hub.
Both ask `judge_drift`, so the two can never disagree about what a policy means.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


def escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def split_pointer(pointer: str) -> list[str]:
    if not pointer or pointer == "/":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]


def is_ignored(path: str, ignore_paths: Sequence[str]) -> bool:
    """Whether `path` is at or below one of the ignore patterns."""
    parts = split_pointer(path)
    for pattern in ignore_paths:
        wanted = split_pointer(pattern)
        if len(wanted) > len(parts):
            continue
        if all(w == "*" or w == p for w, p in zip(wanted, parts, strict=False)):
            return True
    return False


class DriftVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """What a policy makes of one observation."""

    fields: list[str]
    """The changed JSON pointers that count: those outside the ignore paths."""
    drifted: bool
    """There is drift the policy cares about (report it, and correct it if asked)."""
    correct: bool
    """Re-apply now."""


def judge_drift(
    policy: str, *, fields: Sequence[str], deleted: bool, ignore_paths: Sequence[str] = ()
) -> DriftVerdict:
    """Drift counts unless the policy is `ignore` or every changed field is ignored (a deleted
    object always counts); it is corrected only under `correct`."""
    counted = [field for field in fields if not is_ignored(field, ignore_paths)]
    drifted = policy != "ignore" and (deleted or bool(counted))
    return DriftVerdict(fields=counted, drifted=drifted, correct=drifted and policy == "correct")
