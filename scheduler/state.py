"""The scheduler's state: a fold of EVENTS and REPORTS, rebuilt from the log at every start
(from the newest snapshot on, see `scheduler.snapshots`).

Nothing here is persisted on its own: after a crash the scheduler replays the log and arrives
at the same state, so it neither forgets a decision nor makes one twice. The fold is written
as in-place updates of plain dicts, because it is replayed over every event of the fleet at
start-up; it performs no I/O and reads no clock (times come from the stored events).

Report origins are checked here: a report sourced from an edge outbox carries the hub-written
`Nats-Stream-Source` header, and a report whose claimed cluster differs from the outbox it came
from is ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events.catalog import (
    BlueprintAssigned,
    BlueprintPublished,
    BlueprintRolloutAdvanced,
    BlueprintRolloutHalted,
    BlueprintSyncForced,
    BlueprintUnassigned,
    ClusterCapabilitiesReported,
    ClusterDeregistered,
    ClusterDrainStarted,
    ClusterLabelsChanged,
    ClusterRegistered,
    ClusterTaskHeld,
    ClusterTaskRefused,
    ClusterTaskScheduled,
    DataKeysShredded,
    Event,
    OverrideRemoved,
    OverrideSet,
    Placement,
    Provenance,
    RolloutAdvanced,
    RolloutHalted,
    RolloutResumed,
    RolloutStrategy,
    TaskApplied,
    TaskFailed,
    TasksetDependenciesSet,
    TasksetPublished,
    TasksetRetired,
)
from events.edges import report_origin
from events.subjects import event_subject
from scheduler.rollout import Outcome, RolloutView
from taskset.capabilities import ClusterCapabilities
from taskset.codec import decode_taskset
from taskset.overrides import Override, OverrideError, Snapshot, parse_patches

log = logging.getLogger(__name__)

SCHEDULER_ACTOR = "scheduler"
ALL_TASKSETS = "*"
"""Marker in a dirty set: every taskset needs a new decision (a cluster changed)."""


@dataclass
class SnapshotRecord:
    """One published version; its body is decoded only when a cluster needs it."""

    version: int
    digest: str
    format: str
    body: bytes
    values: dict[str, Any]
    chart_archive: str
    placement: Placement
    rollout: RolloutStrategy
    provenance: Provenance | None = None
    _snapshot: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            taskset = decode_taskset(self.body)
            archive = self.chart_archive or (
                taskset.source.chart_archive if taskset.source is not None else ""
            )
            self._snapshot = Snapshot(taskset=taskset, values=self.values, chart_archive=archive)
        return self._snapshot


@dataclass
class TasksetRecord:
    versions: dict[int, SnapshotRecord] = field(default_factory=dict)
    latest: int = 0
    retired: bool = False

    @property
    def current(self) -> SnapshotRecord | None:
        return self.versions.get(self.latest)


@dataclass(frozen=True)
class ScheduledRecord:
    """The last ClusterTask the scheduler wrote for one (cluster, taskset)."""

    version: int
    generation: int
    digest: str
    removed: bool
    overrides: tuple[str, ...] = ()
    wave: int = 0


@dataclass(frozen=True)
class ReportRecord:
    """The latest outcome a cluster reported for one taskset."""

    failed: bool
    version: int
    generation: int
    removed: bool
    at: datetime


@dataclass(frozen=True)
class RefusalRecord:
    version: int
    input_digest: str
    at: datetime


@dataclass
class RolloutRecord:
    version: int
    waves: list[tuple[str, ...]] = field(default_factory=list)
    halted: bool = False
    resumed_at: datetime | None = None

    def view(self) -> RolloutView:
        return RolloutView(version=self.version, waves=tuple(self.waves), halted=self.halted)

    def wave_of(self, cluster: str) -> int | None:
        for index, wave in enumerate(self.waves):
            if cluster in wave:
                return index
        return None


@dataclass
class BlueprintRecord:
    """Every published version of one blueprint; `tasksets` is every taskset any version has."""

    versions: dict[int, BlueprintPublished] = field(default_factory=dict)
    latest: int = 0
    tasksets: set[str] = field(default_factory=set)


@dataclass
class SchedulerState:
    clusters: dict[str, dict[str, str]] = field(default_factory=dict)
    deregistered: set[str] = field(default_factory=set)
    draining: set[str] = field(default_factory=set)
    """Clusters every taskset is leaving (`ClusterDrainStarted`): placed nothing any more."""
    releases: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(cluster, taskset) → (version delivered, release revision): the revision grows by one for
    each new version a cluster gets, and starts again at 1 after a removal (Helm's revision)."""
    capabilities: dict[str, ClusterCapabilities] = field(default_factory=dict)
    """What each cluster's apiserver offers, as last reported (`ClusterCapabilitiesReported`)."""
    tasksets: dict[str, TasksetRecord] = field(default_factory=dict)
    overrides: dict[str, dict[str, Override]] = field(default_factory=dict)
    scheduled: dict[str, dict[str, ScheduledRecord]] = field(default_factory=dict)
    """taskset -> cluster -> last ClusterTask written."""
    generations: dict[tuple[str, str], int] = field(default_factory=dict)
    """(cluster, taskset) -> highest generation ever written, kept across deregistration."""
    refused: dict[tuple[str, str], RefusalRecord] = field(default_factory=dict)
    rollouts: dict[str, RolloutRecord] = field(default_factory=dict)
    reports: dict[tuple[str, str], ReportRecord] = field(default_factory=dict)
    subject_seqs: dict[str, int] = field(default_factory=dict)
    """Last stream sequence per subject the scheduler appends to (for conditional appends)."""
    causes: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """taskset -> (event id, correlation id) of events not yet answered by a decision."""
    last_cause: dict[str, tuple[str, str]] = field(default_factory=dict)
    global_causes: list[tuple[str, str]] = field(default_factory=list)
    blueprints: dict[str, BlueprintRecord] = field(default_factory=dict)
    blueprint_assignments: dict[tuple[str, str], int] = field(default_factory=dict)
    """(blueprint, cluster) -> pinned version (0: assigned, following the latest)."""
    taskset_dependencies: dict[str, list[str]] = field(default_factory=dict)
    """Dependencies of tasksets published on their own."""
    held: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    """(cluster, taskset) -> (Waiting|Blocked, reason) its new desired state is held for."""
    blueprint_rollouts: dict[str, RolloutRecord] = field(default_factory=dict)
    """blueprint -> the rollout of its latest version that has started."""
    blueprint_started: dict[str, tuple[int, set[str]]] = field(default_factory=dict)
    """blueprint -> (version, clusters its rollout has started on), for quick lookups."""
    blueprint_reached: dict[tuple[str, str], int] = field(default_factory=dict)
    """(blueprint, cluster) -> the newest version whose rollout reached the cluster."""
    forced: set[tuple[str, str]] = field(default_factory=set)
    """(cluster, taskset) pairs to send again as a new generation (force-sync)."""
    resealed: set[tuple[str, str]] = field(default_factory=set)
    """(cluster, taskset) pairs whose DESIRED message is sealed with a shredded data key: they
    are written again (a new generation, sealed with the cluster's new key)."""
    shredded: int = 0
    """How many times data keys were shredded: what was opened in memory before is forgotten."""
    events_seq: int = 0
    reports_seq: int = 0

    # --- folding ------------------------------------------------------------------------------

    def apply_event(self, seq: int, subject: str, stored_at: datetime, event: Event) -> set[str]:
        """Fold one EVENTS message; return the tasksets whose decisions may have changed."""
        self.events_seq = max(self.events_seq, seq)
        self.subject_seqs[subject] = max(self.subject_seqs.get(subject, 0), seq)
        dirty: set[str] = set()
        fold = _EVENT_FOLDS.get(type(event))
        if fold is not None:
            fold(self, event, stored_at, dirty)
        self._note_cause(event, dirty)
        return dirty

    # one fold per event type: each adds the tasksets whose decisions may change to `dirty`

    def _fold_taskset_published(
        self, event: TasksetPublished, stored_at: datetime, dirty: set[str]
    ) -> None:
        record = self.tasksets.setdefault(event.taskset, TasksetRecord())
        record.versions[event.taskset_version] = SnapshotRecord(
            version=event.taskset_version,
            digest=event.digest,
            format=event.format,
            body=event.body,
            values=event.values,
            chart_archive=event.chart_archive,
            placement=event.placement,
            rollout=event.rollout,
            provenance=event.provenance,
        )
        record.latest = max(record.latest, event.taskset_version)
        record.retired = False
        dirty.add(event.taskset)

    def _fold_taskset_retired(
        self, event: TasksetRetired, stored_at: datetime, dirty: set[str]
    ) -> None:
        if event.taskset in self.tasksets:
            self.tasksets[event.taskset].retired = True
        dirty.add(event.taskset)

    def _fold_override_set(self, event: OverrideSet, stored_at: datetime, dirty: set[str]) -> None:
        try:
            patches = parse_patches(event.patches) if event.patches else ()
        except OverrideError as e:
            log.warning("ignoring unreadable override %s: %s", event.name, e)
            patches = ()
        self.overrides.setdefault(event.taskset, {})[event.name] = Override(
            taskset=event.taskset,
            name=event.name,
            cluster=event.cluster,
            selector=event.selector,
            values=event.values,
            patches=patches,
            revision=event.id,
        )
        dirty.add(event.taskset)

    def _fold_override_removed(
        self, event: OverrideRemoved, stored_at: datetime, dirty: set[str]
    ) -> None:
        self.overrides.get(event.taskset, {}).pop(event.name, None)
        dirty.add(event.taskset)

    def _fold_cluster_registered(
        self, event: ClusterRegistered, stored_at: datetime, dirty: set[str]
    ) -> None:
        self.clusters[event.cluster] = dict(event.labels)
        self.deregistered.discard(event.cluster)
        self.draining.discard(event.cluster)
        dirty.add(ALL_TASKSETS)

    def _fold_cluster_labels_changed(
        self, event: ClusterLabelsChanged, stored_at: datetime, dirty: set[str]
    ) -> None:
        if event.cluster in self.clusters:
            self.clusters[event.cluster] = dict(event.labels)
            dirty.add(ALL_TASKSETS)

    def _fold_cluster_drain_started(
        self, event: ClusterDrainStarted, stored_at: datetime, dirty: set[str]
    ) -> None:
        if event.cluster in self.clusters:
            self.draining.add(event.cluster)
            dirty.add(ALL_TASKSETS)

    def _fold_cluster_capabilities_reported(
        self, event: ClusterCapabilitiesReported, stored_at: datetime, dirty: set[str]
    ) -> None:
        known = self.capabilities.get(event.cluster)
        if known is None or known.digest != event.capabilities.digest:
            self.capabilities[event.cluster] = event.capabilities
            dirty.add(ALL_TASKSETS)

    def _fold_cluster_deregistered(
        self, event: ClusterDeregistered, stored_at: datetime, dirty: set[str]
    ) -> None:
        self.draining.discard(event.cluster)
        self.capabilities.pop(event.cluster, None)
        for key in [k for k in self.releases if k[0] == event.cluster]:
            del self.releases[key]
        self.clusters.pop(event.cluster, None)
        self.deregistered.add(event.cluster)
        for by_cluster in self.scheduled.values():
            by_cluster.pop(event.cluster, None)
        for key in [k for k in self.refused if k[0] == event.cluster]:
            del self.refused[key]
        for key in [k for k in self.held if k[0] == event.cluster]:
            del self.held[key]
        self.forced = {pair for pair in self.forced if pair[0] != event.cluster}
        self.resealed = {pair for pair in self.resealed if pair[0] != event.cluster}
        for key in [k for k in self.blueprint_assignments if k[1] == event.cluster]:
            del self.blueprint_assignments[key]
        for key in [k for k in self.blueprint_reached if k[1] == event.cluster]:
            del self.blueprint_reached[key]
        dirty.add(ALL_TASKSETS)

    def _fold_cluster_task_scheduled(
        self, event: ClusterTaskScheduled, stored_at: datetime, dirty: set[str]
    ) -> None:
        name = event.taskset
        for part in event.clusters:
            key = (part.cluster, name)
            if part.cluster in self.clusters:
                self.scheduled.setdefault(name, {})[part.cluster] = ScheduledRecord(
                    version=part.taskset_version,
                    generation=part.generation,
                    digest=part.digest,
                    removed=part.removed,
                    overrides=tuple(part.overrides),
                    wave=part.wave,
                )
                self.refused.pop(key, None)
                self.held.pop(key, None)
                self.forced.discard(key)
                self.resealed.discard(key)
            self.generations[key] = max(self.generations.get(key, 0), part.generation)
            if part.removed:
                self.releases.pop(key, None)
            else:
                known = self.releases.get(key)
                if known is None:
                    self.releases[key] = (part.taskset_version, 1)
                elif known[0] != part.taskset_version:
                    self.releases[key] = (part.taskset_version, known[1] + 1)

    def _fold_cluster_task_held(
        self, event: ClusterTaskHeld, stored_at: datetime, dirty: set[str]
    ) -> None:
        if event.cluster in self.clusters:
            self.held[(event.cluster, event.taskset)] = (event.hold, event.reason)

    def _fold_taskset_dependencies_set(
        self, event: TasksetDependenciesSet, stored_at: datetime, dirty: set[str]
    ) -> None:
        if event.depends_on:
            self.taskset_dependencies[event.taskset] = list(event.depends_on)
        else:
            self.taskset_dependencies.pop(event.taskset, None)
        dirty.add(event.taskset)

    def _fold_blueprint_published(
        self, event: BlueprintPublished, stored_at: datetime, dirty: set[str]
    ) -> None:
        record = self.blueprints.setdefault(event.blueprint, BlueprintRecord())
        record.versions[event.blueprint_version] = event
        record.latest = max(record.latest, event.blueprint_version)
        record.tasksets.update(entry.taskset for entry in event.entries)
        dirty.update(record.tasksets)

    def _fold_blueprint_assigned(
        self, event: BlueprintAssigned, stored_at: datetime, dirty: set[str]
    ) -> None:
        self.blueprint_assignments[(event.blueprint, event.cluster)] = event.pinned_version
        dirty.update(self._blueprint_tasksets(event.blueprint))

    def _fold_blueprint_unassigned(
        self, event: BlueprintUnassigned, stored_at: datetime, dirty: set[str]
    ) -> None:
        self.blueprint_assignments.pop((event.blueprint, event.cluster), None)
        dirty.update(self._blueprint_tasksets(event.blueprint))

    def _fold_blueprint_sync_forced(
        self, event: BlueprintSyncForced, stored_at: datetime, dirty: set[str]
    ) -> None:
        if event.cluster in self.clusters:
            tasksets = self._blueprint_tasksets(event.blueprint)
            self.forced.update((event.cluster, name) for name in tasksets)
            dirty.update(tasksets)

    def _fold_data_keys_shredded(
        self, event: DataKeysShredded, stored_at: datetime, dirty: set[str]
    ) -> None:
        self.shredded += 1
        if event.cluster not in self.clusters:
            return
        for taskset, by_cluster in self.scheduled.items():
            record = by_cluster.get(event.cluster)
            if record is not None and not record.removed:
                self.resealed.add((event.cluster, taskset))
                dirty.add(taskset)

    def _fold_blueprint_rollout_advanced(
        self, event: BlueprintRolloutAdvanced, stored_at: datetime, dirty: set[str]
    ) -> None:
        rollout = self.blueprint_rollout(event.blueprint, event.blueprint_version)
        self.blueprint_rollouts[event.blueprint] = rollout
        while len(rollout.waves) <= event.wave:
            rollout.waves.append(())
        rollout.waves[event.wave] = tuple(event.clusters)
        started = self.blueprint_started.get(event.blueprint)
        if started is None or started[0] != event.blueprint_version:
            started = (event.blueprint_version, set())
            self.blueprint_started[event.blueprint] = started
        started[1].update(event.clusters)
        for cluster in event.clusters:
            key = (event.blueprint, cluster)
            self.blueprint_reached[key] = max(
                self.blueprint_reached.get(key, 0), event.blueprint_version
            )
        dirty.update(self._blueprint_tasksets(event.blueprint))

    def _fold_blueprint_rollout_halted(
        self, event: BlueprintRolloutHalted, stored_at: datetime, dirty: set[str]
    ) -> None:
        rollout = self.blueprint_rollout(event.blueprint, event.blueprint_version)
        rollout.halted = True
        self.blueprint_rollouts[event.blueprint] = rollout

    def blueprint_rollout(self, blueprint: str, version: int) -> RolloutRecord:
        """The rollout of `version` so far (a fresh one if another version's is recorded)."""
        rollout = self.blueprint_rollouts.get(blueprint)
        if rollout is None or rollout.version != version:
            return RolloutRecord(version=version)
        return rollout

    def _blueprint_tasksets(self, blueprint: str) -> set[str]:
        record = self.blueprints.get(blueprint)
        return set(record.tasksets) if record is not None else set()

    def dependents_of(self, taskset: str) -> set[str]:
        """Tasksets that depend on `taskset` somewhere (their own dependencies or a blueprint)."""
        found = {name for name, needs in self.taskset_dependencies.items() if taskset in needs}
        for record in self.blueprints.values():
            if taskset not in record.tasksets:
                continue
            for published in record.versions.values():
                found.update(e.taskset for e in published.entries if taskset in e.depends_on)
        return found

    def _fold_cluster_task_refused(
        self, event: ClusterTaskRefused, stored_at: datetime, dirty: set[str]
    ) -> None:
        if event.cluster in self.clusters:
            self.refused[(event.cluster, event.taskset)] = RefusalRecord(
                version=event.taskset_version,
                input_digest=event.input_digest,
                at=stored_at,
            )
        dirty.add(event.taskset)

    def _fold_rollout_advanced(
        self, event: RolloutAdvanced, stored_at: datetime, dirty: set[str]
    ) -> None:
        rollout = self._rollout(event.taskset, event.taskset_version)
        while len(rollout.waves) <= event.wave:
            rollout.waves.append(())
        rollout.waves[event.wave] = tuple(event.clusters)
        dirty.add(event.taskset)

    def _fold_rollout_halted(
        self, event: RolloutHalted, stored_at: datetime, dirty: set[str]
    ) -> None:
        self._rollout(event.taskset, event.taskset_version).halted = True
        dirty.add(event.taskset)

    def _fold_rollout_resumed(
        self, event: RolloutResumed, stored_at: datetime, dirty: set[str]
    ) -> None:
        rollout = self._rollout(event.taskset, event.taskset_version)
        rollout.halted = False
        rollout.resumed_at = stored_at
        dirty.add(event.taskset)

    def apply_report(
        self,
        seq: int,
        stored_at: datetime,
        event: Event,
        headers: Mapping[str, str] | None = None,
        subject: str = "",
    ) -> set[str]:
        """Fold one REPORTS message; return the tasksets whose rollout may move."""
        self.reports_seq = max(self.reports_seq, seq)
        if not isinstance(event, TaskApplied | TaskFailed):
            return set()
        origin = report_origin(subject, headers)
        if origin is not None and origin != event.cluster:
            log.warning(
                "ignoring report %s: it claims cluster %s but came from %s",
                event.id,
                event.cluster,
                origin,
            )
            return set()
        key = (event.cluster, event.taskset)
        self.reports[key] = ReportRecord(
            failed=isinstance(event, TaskFailed),
            version=event.taskset_version,
            generation=event.generation,
            removed=isinstance(event, TaskApplied) and event.removed,
            at=stored_at,
        )
        dirty = {event.taskset} | self.dependents_of(event.taskset)
        self._note_cause(event, dirty)
        return dirty

    def _rollout(self, taskset: str, version: int) -> RolloutRecord:
        rollout = self.rollouts.get(taskset)
        if rollout is None or rollout.version != version:
            rollout = RolloutRecord(version=version)
            self.rollouts[taskset] = rollout
        return rollout

    def _note_cause(self, event: Event, dirty: set[str]) -> None:
        cause = (event.id, event.correlation_id or event.id)
        answered = event.actor == SCHEDULER_ACTOR and isinstance(
            event,
            ClusterTaskScheduled
            | ClusterTaskRefused
            | ClusterTaskHeld
            | RolloutAdvanced
            | RolloutHalted,
        )
        if answered:
            taskset = getattr(event, "taskset", "")
            self.causes.pop(taskset, None)
            self.global_causes.clear()
            return
        if ALL_TASKSETS in dirty:
            self.global_causes.append(cause)
            for name in self.tasksets:
                self.last_cause[name] = cause
            return
        for name in dirty:
            self.causes.setdefault(name, []).append(cause)
            self.last_cause[name] = cause

    # --- reading -----------------------------------------------------------------------------

    def causes_of(self, taskset: str) -> list[tuple[str, str]]:
        """The events a decision about `taskset` answers (at least the latest relevant one)."""
        causes = self.global_causes + self.causes.get(taskset, [])
        if causes:
            return causes[-32:]
        last = self.last_cause.get(taskset)
        return [last] if last else []

    def taskset_names(self) -> list[str]:
        return sorted(self.tasksets)

    def rollout_for(self, taskset: str, version: int) -> RolloutRecord:
        rollout = self.rollouts.get(taskset)
        if rollout is None or rollout.version != version:
            return RolloutRecord(version=version)
        return rollout

    def outcome(
        self, cluster: str, taskset: str, version: int, resumed_at: datetime | None
    ) -> tuple[Outcome, datetime | None]:
        """How `cluster` fared with `version`, at the generation it was last given."""
        record = self.scheduled.get(taskset, {}).get(cluster)
        if record is None or record.removed or record.version != version:
            refusal = self.refused.get((cluster, taskset))
            if refusal is not None and refusal.version == version:
                return _failure(refusal.at, resumed_at), refusal.at
            return "pending", None
        report = self.reports.get((cluster, taskset))
        if report is None or report.version != version or report.generation < record.generation:
            return "pending", None
        if report.failed:
            return _failure(report.at, resumed_at), report.at
        return "applied", report.at

    def schedule_subject(self, taskset: str, cluster: str) -> str:
        """Where a refusal or a hold of `taskset` on `cluster` is recorded (a cluster's new
        desired state is recorded on the taskset's own subject, chunked)."""
        return event_subject("schedule", f"{taskset}.{cluster}")


_EVENT_FOLDS: dict[type[Event], Callable[[SchedulerState, Any, datetime, set[str]], None]] = {
    TasksetPublished: SchedulerState._fold_taskset_published,
    TasksetRetired: SchedulerState._fold_taskset_retired,
    OverrideSet: SchedulerState._fold_override_set,
    OverrideRemoved: SchedulerState._fold_override_removed,
    ClusterRegistered: SchedulerState._fold_cluster_registered,
    ClusterLabelsChanged: SchedulerState._fold_cluster_labels_changed,
    ClusterDeregistered: SchedulerState._fold_cluster_deregistered,
    ClusterDrainStarted: SchedulerState._fold_cluster_drain_started,
    ClusterCapabilitiesReported: SchedulerState._fold_cluster_capabilities_reported,
    ClusterTaskScheduled: SchedulerState._fold_cluster_task_scheduled,
    ClusterTaskRefused: SchedulerState._fold_cluster_task_refused,
    RolloutAdvanced: SchedulerState._fold_rollout_advanced,
    RolloutHalted: SchedulerState._fold_rollout_halted,
    RolloutResumed: SchedulerState._fold_rollout_resumed,
    ClusterTaskHeld: SchedulerState._fold_cluster_task_held,
    TasksetDependenciesSet: SchedulerState._fold_taskset_dependencies_set,
    BlueprintPublished: SchedulerState._fold_blueprint_published,
    BlueprintAssigned: SchedulerState._fold_blueprint_assigned,
    BlueprintUnassigned: SchedulerState._fold_blueprint_unassigned,
    BlueprintSyncForced: SchedulerState._fold_blueprint_sync_forced,
    BlueprintRolloutAdvanced: SchedulerState._fold_blueprint_rollout_advanced,
    BlueprintRolloutHalted: SchedulerState._fold_blueprint_rollout_halted,
    DataKeysShredded: SchedulerState._fold_data_keys_shredded,
}
"""How each EVENTS type changes the state; other types change only the positions."""


def _failure(at: datetime, resumed_at: datetime | None) -> Outcome:
    return "forgiven" if resumed_at is not None and at <= resumed_at else "failed"
