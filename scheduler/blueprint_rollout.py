"""Blueprint rollouts: a new blueprint version spreads over its clusters in waves.

The same rules as a taskset's rollout (`scheduler.rollout.next_rollout_step`), with the whole
stack as the unit: a cluster has settled on version N once every entry of N is applied and
Ready there at the generation last written (`applied`), or once one entry failed, was refused
or is held `Blocked` (`failed`). Until its wave starts a cluster keeps the version it had; a
cluster that joins (registered, relabelled, assigned) falls into the next wave, at once when
the rollout has no batch size. Pinned clusters are not part of any rollout. More failures than
the threshold halt the rollout until the next version is published.

Pure: the folded state and `now` in, events out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from events.catalog import BlueprintRolloutAdvanced, BlueprintRolloutHalted, Event
from scheduler.dependencies import is_member
from scheduler.rollout import Outcome, next_rollout_step
from scheduler.state import SCHEDULER_ACTOR, SchedulerState


@dataclass
class BlueprintRolloutDecision:
    events: list[Event] = field(default_factory=list)
    wake_at: datetime | None = None


def stack_outcome(
    state: SchedulerState, blueprint: str, version: int, cluster: str
) -> tuple[Outcome, datetime | None]:
    """How `cluster` fared with every entry of blueprint `version`."""
    published = state.blueprints[blueprint].versions[version]
    settled_at: datetime | None = None
    pending = False
    for entry in published.entries:
        record = state.tasksets.get(entry.taskset)
        if record is None:
            return "failed", None
        wanted = entry.version or record.latest
        held = state.held.get((cluster, entry.taskset))
        if held is not None and held[0] == "Blocked":
            return "failed", None
        scheduled = state.scheduled.get(entry.taskset, {}).get(cluster)
        if scheduled is None or scheduled.removed or scheduled.version != wanted:
            refusal = state.refused.get((cluster, entry.taskset))
            if refusal is not None and refusal.version == wanted:
                return "failed", refusal.at
            pending = True
            continue
        report = state.reports.get((cluster, entry.taskset))
        if report is None or report.version != wanted or report.generation < scheduled.generation:
            pending = True
            continue
        if report.failed:
            return "failed", report.at
        if settled_at is None or report.at > settled_at:
            settled_at = report.at
    return ("pending", None) if pending else ("applied", settled_at)


def decide_blueprint_rollout(
    state: SchedulerState,
    blueprint: str,
    now: datetime,
    new_id: Callable[[], str],
) -> BlueprintRolloutDecision:
    """The next step of the rollout of the blueprint's latest version."""
    record = state.blueprints.get(blueprint)
    decision = BlueprintRolloutDecision()
    if record is None or record.latest not in record.versions:
        return decision
    published = record.versions[record.latest]
    targets = sorted(
        cluster
        for cluster, labels in state.clusters.items()
        if is_member(record, blueprint, cluster, labels, state)
        and not state.blueprint_assignments.get((blueprint, cluster))
    )
    view = state.blueprint_rollout(blueprint, record.latest).view()
    outcomes: dict[str, Outcome] = {}
    settled_at: datetime | None = None
    for cluster in targets:
        if cluster not in view.started:
            continue
        outcome, at = stack_outcome(state, blueprint, record.latest, cluster)
        outcomes[cluster] = outcome
        if at is not None and (settled_at is None or at > settled_at):
            settled_at = at
    step = next_rollout_step(view, targets, published.rollout, outcomes, settled_at, now)
    decision.wake_at = step.wake_at
    envelope = {
        "occurred_at": now,
        "actor": SCHEDULER_ACTOR,
        "correlation_id": published.correlation_id or published.id,
        "causation_id": published.id,
    }
    if step.halt_failed:
        decision.events.append(
            BlueprintRolloutHalted(
                id=new_id(),
                **envelope,  # type: ignore[arg-type]
                blueprint=blueprint,
                blueprint_version=record.latest,
                wave=max(0, len(view.waves) - 1),
                failed=list(step.halt_failed),
                reason=(
                    f"{len(step.halt_failed)} cluster(s) failed, more than the threshold of "
                    f"{published.rollout.failure_threshold}"
                ),
            )
        )
    elif step.start_wave:
        decision.events.append(
            BlueprintRolloutAdvanced(
                id=new_id(),
                **envelope,  # type: ignore[arg-type]
                blueprint=blueprint,
                blueprint_version=record.latest,
                wave=len(view.waves),
                total_waves=step.total_waves,
                clusters=list(step.start_wave),
            )
        )
    return decision
