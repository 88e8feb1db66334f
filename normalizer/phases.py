"""Which phase an object belongs to, from its annotations, the same way for every format.

`fleetbus.io/phase: init|install|postInstall|preDelete` puts an object into that phase; without
it an object is installed. Helm hook annotations are honoured wherever they appear (in a chart,
or in `helm template` output handed over as plain YAML), mapped onto fleetbus phases:

| `helm.sh/hook`                | phase         | why                                          |
|-------------------------------|---------------|----------------------------------------------|
| pre-install, pre-upgrade      | `init`        | the hook's events stay in `HookInfo`: the    |
| post-install, post-upgrade    | `postInstall` | cluster controller runs install hooks on a   |
|                               |               | taskset's first version there, upgrade hooks |
|                               |               | on later ones (`cluster_controller.hooks`)   |
| pre-delete                    | `preDelete`   |                                              |
| post-delete                   | `preDelete`   | the controller runs it after the other       |
|                               |               | objects are deleted                          |
| pre-rollback, post-rollback   | left out      | `fleetbus rollback` publishes an earlier     |
|                               |               | version again: a new version, whose upgrade  |
|                               |               | hooks run                                    |
| test, test-success/-failure   | left out      | `helm test` hooks are not part of a release  |

An object with hooks for several phases appears once in each. The hook's weight and delete
policy (Helm's default `before-hook-creation` when none is given) are kept as `HookInfo`.
Jobs, and Pods outside `install`, must run to completion: their wait policy is `complete`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from normalizer.errors import InvalidHook, UnknownPhase
from taskset.model import PHASES, HookInfo, Phase, WaitPolicy

PHASE_ANNOTATION = "fleetbus.io/phase"
HOOK_ANNOTATION = "helm.sh/hook"
HOOK_WEIGHT_ANNOTATION = "helm.sh/hook-weight"
HOOK_DELETE_POLICY_ANNOTATION = "helm.sh/hook-delete-policy"

HOOK_PHASES: dict[str, Phase] = {
    "pre-install": "init",
    "pre-upgrade": "init",
    "post-install": "postInstall",
    "post-upgrade": "postInstall",
    "pre-delete": "preDelete",
    "post-delete": "preDelete",
}
LEFT_OUT_HOOKS: dict[str, str] = {
    "pre-rollback": "a rollback hook; fleetbus rolls back by publishing an earlier version "
    "again, which runs upgrade hooks",
    "post-rollback": "a rollback hook; fleetbus rolls back by publishing an earlier version "
    "again, which runs upgrade hooks",
    "test": "a helm test hook",
    "test-success": "a helm test hook",
    "test-failure": "a helm test hook",
}
DELETE_POLICIES = ("before-hook-creation", "hook-succeeded", "hook-failed")
DEFAULT_DELETE_POLICY = ["before-hook-creation"]


@dataclass(frozen=True, slots=True)
class PhasePlacement:
    phase: Phase
    hook: HookInfo | None = None


@dataclass(frozen=True, slots=True)
class Classified:
    """Where an object goes: its placements (possibly none), and why it was left out if so."""

    placements: tuple[PhasePlacement, ...]
    left_out: str = ""


def _annotations(manifest: dict[str, Any]) -> dict[str, Any]:
    metadata = manifest.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def classify(manifest: dict[str, Any], *, where: str, what: str) -> Classified:
    """The phases `manifest` goes into, from its annotations (see the module docstring).

    `where` and `what` name the document and object in errors.
    """
    annotations = _annotations(manifest)
    hook_value = annotations.get(HOOK_ANNOTATION)
    phase_value = annotations.get(PHASE_ANNOTATION)
    if hook_value is not None and phase_value is not None:
        raise UnknownPhase(
            where,
            what,
            f"both {HOOK_ANNOTATION} and {PHASE_ANNOTATION} are set; keep one of them",
        )
    if hook_value is not None:
        return _classify_hook(str(hook_value), annotations, where, what)
    if phase_value is None:
        return Classified((PhasePlacement("install"),))
    phase = str(phase_value)
    if phase not in PHASES:
        raise UnknownPhase(
            where,
            what,
            f"unknown phase {phase!r} in annotation {PHASE_ANNOTATION}; "
            f"use one of {', '.join(PHASES)}",
        )
    return Classified((PhasePlacement(phase),))


def _classify_hook(value: str, annotations: dict[str, Any], where: str, what: str) -> Classified:
    events = [event.strip().lower() for event in value.split(",")]
    unknown = [e for e in events if e not in HOOK_PHASES and e not in LEFT_OUT_HOOKS]
    if unknown:
        # Helm 4 skips an object with any hook it does not know (Helm 2's crd-install among
        # them: such charts also ship their CRDs in crds/, which Helm installs first).
        return Classified(
            (), f"unknown Helm hook {unknown[0]!r} in {HOOK_ANNOTATION}, skipped as Helm skips it"
        )
    weight = _hook_weight(annotations, where, what)
    delete_policy = _delete_policy(annotations, where, what)
    by_phase: dict[Phase, list[str]] = {}
    for event in events:
        phase = HOOK_PHASES.get(event)
        if phase is not None:
            by_phase.setdefault(phase, []).append(event)
    placements = tuple(
        PhasePlacement(
            phase,
            HookInfo(events=by_phase[phase], weight=weight, delete_policy=delete_policy),
        )
        for phase in PHASES
        if phase in by_phase
    )
    left_out = "" if placements else LEFT_OUT_HOOKS[events[0]]
    return Classified(placements, left_out)


def _hook_weight(annotations: dict[str, Any], where: str, what: str) -> int:
    raw = annotations.get(HOOK_WEIGHT_ANNOTATION)
    if raw is None:
        return 0
    try:
        return int(str(raw).strip())
    except ValueError as e:
        raise InvalidHook(
            where, what, f"{HOOK_WEIGHT_ANNOTATION} must be an integer, not {raw!r}"
        ) from e


def _delete_policy(annotations: dict[str, Any], where: str, what: str) -> list[str]:
    raw = annotations.get(HOOK_DELETE_POLICY_ANNOTATION)
    if raw is None:
        return list(DEFAULT_DELETE_POLICY)
    policies = [policy.strip() for policy in str(raw).split(",") if policy.strip()]
    for policy in policies:
        if policy not in DELETE_POLICIES:
            raise InvalidHook(
                where,
                what,
                f"unknown {HOOK_DELETE_POLICY_ANNOTATION} {policy!r}; "
                f"use {', '.join(DELETE_POLICIES)}",
            )
    return policies or list(DEFAULT_DELETE_POLICY)


def wait_policy(manifest: dict[str, Any], phase: Phase) -> WaitPolicy:
    """`complete` for Jobs anywhere and for Pods outside `install`; `ready` for the rest."""
    kind = manifest.get("kind")
    api_version = manifest.get("apiVersion")
    if kind == "Job" and api_version == "batch/v1":
        return "complete"
    if kind == "Pod" and api_version == "v1" and phase != "install":
        return "complete"
    return "ready"
