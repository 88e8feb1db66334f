"""Status roll-up, Step → Tasklet → Task. Pure.

A Tasklet's status is its phases' plans read in order: the first phase that failed makes it
Failed (naming the Step, object and reason), the first that is not complete makes it
Progressing (naming what it waits for), all complete make it Ready. A Task adds its own init
phase in front and mirrors its Tasklet. Counters (steps ready/failed, drift detected/corrected)
are sums over the Steps. Times move only on transitions, so an unchanged cluster produces an
unchanged status and no write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from cluster_controller.plan import Blocked, PhasePlan, progress_text
from kube_contract.model import (
    DriftSummary,
    ResourcePhase,
    StepCounts,
    StepStatus,
    TaskletStatus,
    TaskSpec,
    TaskStatus,
    readiness_conditions,
)
from taskset.model import Phase


class PhaseOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Where one phase stands after a reconcile pass; `plan` is None if it was not reached."""

    phase: Phase
    total: int
    ready: int
    failed: int = 0
    plan: PhasePlan | None = None
    errors: list[Blocked] = msgspec.field(default_factory=list)
    """Steps that could not be applied this pass (transient errors), with why."""

    @property
    def complete(self) -> bool:
        return self.total == self.ready or (self.plan is not None and self.plan.complete)


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    phase: ResourcePhase
    current_phase: str = ""
    failed_step: str = ""
    failed_object: str = ""
    reason: str = ""
    message: str = ""


def verdict(outcomes: Sequence[PhaseOutcome]) -> Verdict:
    """The state of phases run in order: the first failed or unfinished one decides."""
    for outcome in outcomes:
        plan = outcome.plan
        if plan is not None and plan.failed:
            first = plan.failed[0]
            return Verdict(
                phase="Failed",
                current_phase=outcome.phase,
                failed_step=first.step,
                failed_object=first.object,
                reason=first.reason or "StepFailed",
                message=first.message,
            )
        if outcome.complete:
            continue
        if outcome.errors:
            first = outcome.errors[0]
            return Verdict(
                phase="Progressing",
                current_phase=outcome.phase,
                reason=first.reason,
                message=first.message,
            )
        if plan is not None and plan.waiting:
            first = plan.waiting[0]
            more = f" (and {len(plan.waiting) - 1} more)" if len(plan.waiting) > 1 else ""
            return Verdict(
                phase="Progressing",
                current_phase=outcome.phase,
                reason="Waiting",
                message=f"waiting for {first.message}{more}",
            )
        return Verdict(
            phase="Progressing",
            current_phase=outcome.phase,
            reason="Applying",
            message=f"applying {outcome.phase} steps",
        )
    return Verdict(phase="Ready", reason="Ready", message="all steps are ready")


def counts(outcomes: Iterable[PhaseOutcome]) -> StepCounts:
    total = ready = failed = 0
    for outcome in outcomes:
        total += outcome.total
        ready += outcome.ready
        failed += outcome.failed
    return StepCounts(total=total, ready=ready, failed=failed)


def drift_summary(
    steps: Iterable[StepStatus], reported_only: Iterable[StepStatus] = ()
) -> DriftSummary:
    """Drift over `steps`; `reported_only` are those of them whose policy is `report` (their
    drift stays until someone reverts it, so nobody should wait for its correction)."""
    detected = corrected = drifted = 0
    for status in steps:
        detected += status.drift.detected
        corrected += status.drift.corrected
        drifted += status.drift.state == "Drifted"
    reported = sum(1 for status in reported_only if status.drift.state == "Drifted")
    return DriftSummary(detected=detected, corrected=corrected, drifted=drifted, reported=reported)


def tasklet_status(
    previous: TaskletStatus,
    outcomes: Sequence[PhaseOutcome],
    *,
    generation: int,
    drift: DriftSummary,
    deleting: bool,
    now: str,
) -> TaskletStatus:
    decided = verdict(outcomes)
    phase: ResourcePhase = "Deleting" if deleting else decided.phase
    total = counts(outcomes)
    reason = "Deleting" if deleting else decided.reason
    message = "running preDelete steps, then removing objects" if deleting else decided.message
    return TaskletStatus(
        phase=phase,
        observed_generation=generation,
        current_phase="preDelete" if deleting else decided.current_phase,
        progress=progress_text(total.ready, total.total),
        steps=total,
        phases={
            o.phase: StepCounts(total=o.total, ready=o.ready, failed=o.failed) for o in outcomes
        },
        failed_step=decided.failed_step,
        reason=reason,
        message=message,
        drift=drift,
        conditions=readiness_conditions(
            previous.conditions,
            phase=phase,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        ),
    )


def task_status(
    previous: TaskStatus,
    spec: TaskSpec,
    *,
    generation: int,
    init: PhaseOutcome,
    tasklet: Sequence[PhaseOutcome],
    tasklet_name: str,
    drift: DriftSummary,
    objects: int,
    deleting: bool,
    now: str,
) -> TaskStatus:
    """The Task's status: its init phase, then its Tasklet's phases, as one sequence."""
    outcomes = [init, *tasklet]
    decided = verdict(outcomes)
    phase: ResourcePhase = "Deleting" if deleting else decided.phase
    total = counts(outcomes)
    reason = "Deleting" if deleting else decided.reason
    message = "running preDelete steps, then removing objects" if deleting else decided.message
    ready_at = previous.ready_at if previous.phase == "Ready" and phase == "Ready" else ""
    if phase == "Ready" and not ready_at:
        ready_at = now
    return TaskStatus(
        phase=phase,
        observed_generation=generation,
        version=spec.version,
        generation=spec.generation,
        digest=spec.digest,
        current_phase="preDelete" if deleting else decided.current_phase,
        progress=progress_text(total.ready, total.total),
        steps=total,
        objects=objects,
        tasklet=tasklet_name,
        failed_step=decided.failed_step,
        failed_object=decided.failed_object,
        reason=reason,
        message=message,
        drift=drift,
        ready_at=ready_at,
        release=previous.release,
        conditions=readiness_conditions(
            previous.conditions,
            phase=phase,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        ),
    )
