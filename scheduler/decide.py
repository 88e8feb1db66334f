"""Deciding: for one taskset, which rollout step to take and which ClusterTasks to (re)write.

`decide_taskset` is pure given its inputs: the folded state, the time, a materializer (a pure
function of state, cluster and version) and the DESIRED generations known to be stored. It
returns events to append and DESIRED writes to make, in that order: the log is written first,
so a crash in between is repaired at the next start by comparing DESIRED with the log.

A ClusterTask is rewritten only when what the cluster should run changes (another version or
another digest), never because something unrelated happened.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from events.catalog import (
    SCHEDULE_CHUNK,
    ClusterTaskHeld,
    ClusterTaskRefused,
    ClusterTaskScheduled,
    Event,
    RolloutAdvanced,
    RolloutHalted,
    ScheduledCluster,
)
from events.subjects import desired_subject
from scheduler.dependencies import (
    BlueprintPlacement,
    blueprint_targets,
    dependencies_of,
    dependency_hold,
)
from scheduler.materialize import Materialized, Refusal
from scheduler.placement import place_taskset
from scheduler.rollout import Outcome, RolloutView, next_rollout_step
from scheduler.state import SCHEDULER_ACTOR, ScheduledRecord, SchedulerState
from taskset.model import ClusterTask

Materialize = Callable[
    [SchedulerState, str, str, int, BlueprintPlacement | None], Materialized | Refusal
]


@dataclass(frozen=True)
class DesiredWrite:
    """One message for DESIRED: a ClusterTask (or tombstone) at its generation."""

    task: ClusterTask

    @property
    def subject(self) -> str:
        return desired_subject(self.task.cluster, self.task.taskset_name)

    @property
    def msg_id(self) -> str:
        return f"{self.task.cluster}.{self.task.taskset_name}.{self.task.generation}"


@dataclass
class Decision:
    events: list[Event] = field(default_factory=list)
    writes: list[DesiredWrite] = field(default_factory=list)
    wake_at: datetime | None = None
    scheduled: list[ScheduledCluster] = field(default_factory=list)
    """Clusters given a new generation, gathered into chunked `ClusterTaskScheduled` events by
    `decide_taskset` once every cluster is decided."""


@dataclass(frozen=True)
class _Envelope:
    now: datetime
    new_id: Callable[[], str]
    caused_by: list[str]
    correlation_id: str
    causation_id: str

    def fields(self) -> dict[str, object]:
        return {
            "id": self.new_id(),
            "occurred_at": self.now,
            "actor": SCHEDULER_ACTOR,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }


def decide_taskset(
    state: SchedulerState,
    name: str,
    now: datetime,
    materialize: Materialize,
    new_id: Callable[[], str],
    stored_generations: Mapping[str, int] | None = None,
) -> Decision:
    """Everything the scheduler must do now for taskset `name`."""
    record = state.tasksets.get(name)
    decision = Decision()
    if record is None:
        return decision
    causes = state.causes_of(name)
    envelope = _Envelope(
        now=now,
        new_id=new_id,
        caused_by=[event_id for event_id, _ in causes],
        correlation_id=causes[0][1] if causes else "",
        causation_id=causes[-1][0] if causes else "",
    )
    stored = stored_generations or {}
    current = record.current
    by_blueprint: dict[str, BlueprintPlacement] = {}
    if record.retired or current is None:
        targets: list[str] = []
        view = RolloutView(version=record.latest)
    else:
        by_blueprint = {
            cluster: placement
            for cluster, placement in blueprint_targets(state, name).items()
            if cluster not in state.draining
        }
        targets = [
            cluster
            for cluster in place_taskset(current.placement, state.clusters, taskset=name)
            if cluster not in by_blueprint and cluster not in state.draining
        ]
        view = _advance_rollout(state, name, current.version, targets, now, envelope, decision)
    scheduled = state.scheduled.get(name, {})
    target_set = set(targets) | set(by_blueprint)
    for cluster in sorted(target_set | set(scheduled)):
        decide_cluster(
            state,
            name,
            cluster,
            view,
            targeted=cluster in target_set,
            previous=scheduled.get(cluster),
            stored_generation=stored.get(desired_subject(cluster, name), 0),
            materialize=materialize,
            envelope=envelope,
            decision=decision,
            blueprint=by_blueprint.get(cluster),
        )
    decision.events.extend(scheduled_events(name, decision.scheduled, envelope))
    decision.scheduled = []
    return decision


def scheduled_events(
    name: str, scheduled: list[ScheduledCluster], envelope: _Envelope
) -> list[ClusterTaskScheduled]:
    """One `ClusterTaskScheduled` per chunk of `SCHEDULE_CHUNK` clusters, in cluster order."""
    return [
        ClusterTaskScheduled(
            **envelope.fields(),  # type: ignore[arg-type]
            taskset=name,
            clusters=scheduled[start : start + SCHEDULE_CHUNK],
            caused_by=envelope.caused_by,
        )
        for start in range(0, len(scheduled), SCHEDULE_CHUNK)
    ]


def decide_cluster(
    state: SchedulerState,
    name: str,
    cluster: str,
    view: RolloutView,
    *,
    targeted: bool,
    previous: ScheduledRecord | None,
    stored_generation: int,
    materialize: Materialize,
    envelope: _Envelope,
    decision: Decision,
    blueprint: BlueprintPlacement | None = None,
) -> None:
    """What taskset `name` needs on one cluster, added to `decision`: its removal (no longer
    targeted), a refusal (it cannot be rendered for the cluster), a hold (a dependency is not
    Ready there yet), a new generation (it changed, the rollout reached the cluster, or a sync
    was forced), the rewrite of an unchanged ClusterTask that DESIRED lost
    (`stored_generation` is older), or nothing.

    A cluster a blueprint brings the taskset to runs the entry's pinned version (else the
    latest) at once: the blueprint, not the taskset's own rollout, decides."""
    if not targeted:
        if previous is not None:
            _remove(state, name, cluster, previous, stored_generation, envelope, decision)
        return
    if blueprint is not None:
        record = state.tasksets[name]
        version = blueprint.entry.version or record.latest
        if version not in record.versions:
            return
        wave = 0
    elif cluster in view.started:
        version = view.version
        wave = view.wave_of[cluster]
    elif previous is not None and not previous.removed:
        version, wave = previous.version, previous.wave
    else:
        return
    result = materialize(state, cluster, name, version, blueprint)
    if isinstance(result, Refusal):
        refusal = state.refused.get((cluster, name))
        if refusal is None or refusal.input_digest != result.input_digest:
            decision.events.append(
                ClusterTaskRefused(
                    **envelope.fields(),  # type: ignore[arg-type]
                    cluster=cluster,
                    taskset=name,
                    taskset_version=version,
                    reason=result.reason,
                    input_digest=result.input_digest,
                    size=result.size,
                    limit=result.limit,
                    overrides=list(result.overrides),
                    caused_by=envelope.caused_by,
                )
            )
        return
    unchanged = (
        previous is not None
        and not previous.removed
        and previous.version == version
        and previous.digest == result.digest
        and not (blueprint is not None and (cluster, name) in state.forced)
        and (cluster, name) not in state.resealed
    )
    if unchanged and previous is not None:
        if stored_generation < previous.generation:
            decision.writes.append(
                DesiredWrite(_task(cluster, name, version, previous.generation, result, wave))
            )
        return
    hold = dependency_hold(state, cluster, dependencies_of(state, name, blueprint))
    if hold is not None:
        if state.held.get((cluster, name)) != (hold.hold, hold.reason):
            decision.events.append(
                ClusterTaskHeld(
                    **envelope.fields(),  # type: ignore[arg-type]
                    cluster=cluster,
                    taskset=name,
                    taskset_version=version,
                    hold=hold.hold,
                    reason=hold.reason,
                    dependencies=list(hold.dependencies),
                    blueprint=blueprint.blueprint if blueprint is not None else "",
                    caused_by=envelope.caused_by,
                )
            )
        return
    generation = max(state.generations.get((cluster, name), 0), stored_generation) + 1
    decision.scheduled.append(
        ScheduledCluster(
            cluster=cluster,
            taskset_version=version,
            generation=generation,
            digest=result.digest,
            wave=wave,
            overrides=list(result.overrides),
        )
    )
    decision.writes.append(DesiredWrite(_task(cluster, name, version, generation, result, wave)))


def _task(
    cluster: str, name: str, version: int, generation: int, result: Materialized, wave: int
) -> ClusterTask:
    return ClusterTask(
        cluster=cluster,
        taskset_name=name,
        version=version,
        generation=generation,
        digest=result.digest,
        taskset=result.taskset,
        wave=wave,
        overrides=list(result.overrides),
    )


def _remove(
    state: SchedulerState,
    name: str,
    cluster: str,
    previous: ScheduledRecord,
    stored_generation: int,
    envelope: _Envelope,
    decision: Decision,
) -> None:
    if previous.removed:
        if stored_generation < previous.generation:
            decision.writes.append(DesiredWrite(_tombstone(cluster, name, previous)))
        return
    generation = max(state.generations.get((cluster, name), 0), stored_generation) + 1
    tombstone = ScheduledRecord(
        version=previous.version, generation=generation, digest="", removed=True
    )
    decision.scheduled.append(
        ScheduledCluster(
            cluster=cluster,
            taskset_version=previous.version,
            generation=generation,
            digest="",
            removed=True,
        )
    )
    decision.writes.append(DesiredWrite(_tombstone(cluster, name, tombstone)))


def _tombstone(cluster: str, name: str, record: ScheduledRecord) -> ClusterTask:
    return ClusterTask(
        cluster=cluster,
        taskset_name=name,
        version=record.version,
        generation=record.generation,
        digest="",
        taskset=None,
        removed=True,
    )


def _advance_rollout(
    state: SchedulerState,
    name: str,
    version: int,
    targets: list[str],
    now: datetime,
    envelope: _Envelope,
    decision: Decision,
) -> RolloutView:
    record = state.tasksets[name].versions[version]
    rollout = state.rollout_for(name, version)
    view = rollout.view()
    outcomes: dict[str, Outcome] = {}
    settled_at: datetime | None = None
    for cluster in targets:
        if cluster not in view.started:
            continue
        outcome, at = state.outcome(cluster, name, version, rollout.resumed_at)
        outcomes[cluster] = outcome
        if at is not None and (settled_at is None or at > settled_at):
            settled_at = at
    step = next_rollout_step(view, targets, record.rollout, outcomes, settled_at, now)
    decision.wake_at = step.wake_at
    if step.halt_failed:
        decision.events.append(
            RolloutHalted(
                **envelope.fields(),  # type: ignore[arg-type]
                taskset=name,
                taskset_version=version,
                wave=max(0, len(view.waves) - 1),
                failed=list(step.halt_failed),
                reason=(
                    f"{len(step.halt_failed)} cluster(s) failed, more than the threshold of "
                    f"{record.rollout.failure_threshold}"
                ),
            )
        )
        return RolloutView(version=version, waves=view.waves, halted=True)
    if step.start_wave:
        decision.events.append(
            RolloutAdvanced(
                **envelope.fields(),  # type: ignore[arg-type]
                taskset=name,
                taskset_version=version,
                wave=len(view.waves),
                total_waves=step.total_waves,
                clusters=list(step.start_wave),
            )
        )
        return RolloutView(version=version, waves=(*view.waves, step.start_wave))
    return view
