"""The desired state of a cluster as of any moment, recomputed from the log.

Replaying EVENTS up to a time through the same fold (`SchedulerState`) and the same pure
override functions (`Materializer`) the scheduler uses gives, for each ClusterTask the
scheduler wrote for the cluster, exactly what it wrote: the content is recomputed from the
state at the point in the log where the decision was recorded, and checked against the digest
the decision recorded (`verified`). So `state --at T` is right for any past T, long after
DESIRED has moved on.

`HistoryFold` is that fold; followed for every cluster at once it is what a snapshot keeps
(`scheduler.snapshots`), so an answer can start from a snapshot and fold only the events after
it, with no old decision materialized again.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime

from events.catalog import ClusterDeregistered, ClusterTaskScheduled, Provenance, ScheduledCluster
from events.store import StoredEvent
from scheduler.dependencies import blueprint_placement, blueprints_of_cluster
from scheduler.materialize import Materialized, Materializer
from scheduler.ports import ChartRenderer
from scheduler.state import SchedulerState
from sealing.envelope import DataKeys
from taskset.errors import FleetbusError
from taskset.model import ClusterTask
from taskset.overrides import overrides_for


@dataclass(frozen=True)
class HistoricalTask:
    task: ClusterTask
    scheduled_at: datetime
    seq: int
    verified: bool
    """The recomputed content has the digest the scheduler recorded."""
    problem: str = ""
    provenance: Provenance | None = None
    """Where the version came from, when the hub fetched it from a remote source."""
    content_digest: str = ""
    """The canonical digest of the recomputed content (`task.taskset`), "" without one."""


@dataclass(frozen=True)
class BlueprintAt:
    """A blueprint the cluster was in at that moment: the version, who published it, when."""

    blueprint: str
    version: int
    published_by: str
    published_at: datetime
    pinned: bool


@dataclass(frozen=True)
class DesiredStateAt:
    cluster: str
    registered: bool
    labels: dict[str, str]
    tasks: list[HistoricalTask]
    last_seq: int
    blueprints: list[BlueprintAt]


async def desired_state_at(
    events: AsyncIterable[StoredEvent],
    cluster: str,
    renderer: ChartRenderer | None = None,
    *,
    start: HistoryFold | None = None,
    keys: DataKeys | None = None,
) -> DesiredStateAt:
    """Fold `events` (the log up to the moment asked about) for `cluster`'s desired state.

    `start` is where the fold begins: a fold restored from a snapshot (`scheduler.snapshots`)
    that covers the log up to just before `events`; without it, `events` is the whole log.
    Sealed secrets are opened with `keys` to recompute (and verify) the content; whoever
    shows the result masks them again."""
    fold = start if start is not None else HistoryFold(renderer, cluster=cluster, keys=keys)
    async for stored in events:
        await fold.apply(stored)
    return fold.answer(cluster)


class HistoryFold:
    """The log folded for desired state at any moment: the scheduler's state, and for every
    cluster followed (`cluster`, or all of them when None: what a snapshot keeps) the
    ClusterTasks in force, each with its content recomputed where the decision was recorded."""

    def __init__(
        self,
        renderer: ChartRenderer | None = None,
        *,
        cluster: str | None = None,
        state: SchedulerState | None = None,
        current: dict[str, dict[str, HistoricalTask]] | None = None,
        last_seq: int = 0,
        last_time: datetime | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        self.renderer = renderer
        self.keys = keys
        """Open sealed secrets to recompute content (None: the hub seals nothing)."""
        self.cluster = cluster
        self.state = state if state is not None else SchedulerState()
        self.current = current if current is not None else {}
        """cluster -> taskset -> the ClusterTask in force."""
        self.last_seq = last_seq
        self.last_time = last_time
        self.materialize = Materializer(renderer, cache_size=4096, keys=keys)

    def follows(self, cluster: str) -> bool:
        return self.cluster is None or self.cluster == cluster

    async def apply(self, stored: StoredEvent) -> None:
        event = stored.event
        self.last_seq = stored.seq
        self.last_time = stored.stored_at
        if isinstance(event, ClusterDeregistered) and self.follows(event.cluster):
            self.current.pop(event.cluster, None)
        if isinstance(event, ClusterTaskScheduled):
            for part in event.clusters:
                if not self.follows(part.cluster):
                    continue
                tasks = self.current.setdefault(part.cluster, {})
                if part.removed:
                    tasks.pop(event.taskset, None)
                else:
                    tasks[event.taskset] = await _recompute(
                        self.state, self.materialize, self.renderer, event, part, stored
                    )
                if not tasks:
                    del self.current[part.cluster]
        self.state.apply_event(stored.seq, stored.subject, stored.stored_at, event)

    def answer(self, cluster: str) -> DesiredStateAt:
        state = self.state
        registered = cluster in state.clusters
        current = self.current.get(cluster, {})
        blueprints = [
            BlueprintAt(
                blueprint=name,
                version=version,
                published_by=state.blueprints[name].versions[version].actor,
                published_at=state.blueprints[name].versions[version].occurred_at,
                pinned=bool(state.blueprint_assignments.get((name, cluster))),
            )
            for name, version in blueprints_of_cluster(state, cluster).items()
        ]
        return DesiredStateAt(
            cluster=cluster,
            registered=registered,
            labels=dict(state.clusters.get(cluster, {})),
            tasks=[current[name] for name in sorted(current)] if registered else [],
            last_seq=self.last_seq,
            blueprints=blueprints,
        )


async def _recompute(
    state: SchedulerState,
    materialize: Materializer,
    renderer: ChartRenderer | None,
    event: ClusterTaskScheduled,
    part: ScheduledCluster,
    stored: StoredEvent,
) -> HistoricalTask:
    record = state.tasksets.get(event.taskset)
    snapshot = record.versions.get(part.taskset_version) if record else None
    problem = ""
    result = None
    if snapshot is None:
        problem = f"version {part.taskset_version} of {event.taskset} is not on the log"
    else:
        labels = state.clusters.get(part.cluster, {})
        applicable = overrides_for(
            part.cluster, labels, state.overrides.get(event.taskset, {}).values()
        )
        blueprint = blueprint_placement(state, event.taskset, part.cluster)
        archive = snapshot.snapshot().chart_archive
        entry_values = blueprint is not None and bool(blueprint.entry.values)
        source = snapshot.snapshot().taskset.source
        per_cluster = source is not None and bool(source.consults)
        if (
            renderer is not None
            and archive
            and (entry_values or per_cluster or any(o.values for o in applicable))
        ):
            try:
                await renderer.prepare(archive)
            except FleetbusError as e:
                problem = str(e)
        result = materialize(state, part.cluster, event.taskset, part.taskset_version, blueprint)
    content = result.taskset if isinstance(result, Materialized) else None
    if result is not None and not isinstance(result, Materialized):
        problem = problem or result.reason
    verified = isinstance(result, Materialized) and result.digest == part.digest
    if content is not None and not verified and not problem:
        problem = "recomputed content differs from the digest the scheduler recorded"
    return HistoricalTask(
        task=ClusterTask(
            cluster=part.cluster,
            taskset_name=event.taskset,
            version=part.taskset_version,
            generation=part.generation,
            digest=part.digest,
            taskset=content,
            wave=part.wave,
            overrides=list(part.overrides),
        ),
        scheduled_at=stored.stored_at,
        seq=stored.seq,
        verified=verified,
        problem=problem,
        provenance=snapshot.provenance if snapshot is not None else None,
        content_digest=result.digest if isinstance(result, Materialized) else "",
    )
