"""Blueprints on the write side: publish a version, assign or pin a cluster, force a sync.

A blueprint is an aggregate on `fleet.evt.blueprint.<name>`; each cluster's assignment to it
lives on `fleet.evt.blueprint.<name>.<cluster>`, so pinning a cluster never races a publish.
Publishing resolves the base (`taskset.blueprints.resolve_blueprint`), checks every entry
against the log (the taskset is published and not retired, a pinned version exists) and the
dependency graph (refused with the cycle named), and appends `BlueprintPublished` with the next
version, or nothing when the resolved blueprint is what the latest version already says.

`decide_*` functions are pure (history and the facts they need in, events out, `now` passed);
the async services around them only load, decide and append.

Dependencies of a taskset published on its own (`fleetbus publish --depends-on`) are decided
here too: `TasksetDependenciesSet` on the taskset's subject, refused when they would close a
cycle with the dependencies other tasksets already have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from events.catalog import (
    BlueprintAssigned,
    BlueprintPublished,
    BlueprintSyncForced,
    BlueprintUnassigned,
    Event,
    RolloutStrategy,
    TasksetDependenciesSet,
)
from events.ids import new_event_id
from events.store import EventStore
from events.subjects import EVENTS_PREFIX, event_subject
from registry.clusters import list_clusters
from registry.errors import (
    BlueprintNotFound,
    BlueprintRefused,
    ClusterNotFound,
    HistoryUnavailable,
    InvalidCommand,
    StateConflict,
    TasksetNotPublished,
)
from registry.tasksets import TasksetHistory, check_rollout, load_history
from taskset.blueprints import (
    BlueprintEntry,
    BlueprintError,
    BlueprintSpec,
    ResolvedBlueprint,
    find_cycle,
    resolve_blueprint,
)
from taskset.digest import digest_of
from taskset.names import check_name

BLUEPRINT_AGGREGATE = "blueprint"


# --- the aggregate ----------------------------------------------------------------------------


class BlueprintVersion(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    digest: str
    resolved: ResolvedBlueprint
    rollout: RolloutStrategy
    base: str
    base_version: int
    published_at: datetime
    actor: str


class BlueprintHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Every version of one blueprint (they are few and small)."""

    name: str
    versions: dict[int, BlueprintVersion] = msgspec.field(default_factory=dict)

    @property
    def latest(self) -> BlueprintVersion | None:
        return self.versions[max(self.versions)] if self.versions else None

    def at(self, version: int) -> BlueprintVersion | None:
        """`version`, or the latest for 0."""
        return self.versions.get(version) if version else self.latest


def evolve_blueprint(history: BlueprintHistory, event: Event) -> BlueprintHistory:
    if isinstance(event, BlueprintPublished) and event.blueprint == history.name:
        versions = dict(history.versions)
        versions[event.blueprint_version] = BlueprintVersion(
            version=event.blueprint_version,
            digest=event.digest,
            resolved=ResolvedBlueprint(
                entries=list(event.entries),
                selector=event.selector,
                drift_policy=event.drift_policy,
            ),
            rollout=event.rollout,
            base=event.base,
            base_version=event.base_version,
            published_at=event.occurred_at,
            actor=event.actor,
        )
        return msgspec.structs.replace(history, versions=versions)
    return history


def blueprint_digest(resolved: ResolvedBlueprint, rollout: RolloutStrategy) -> str:
    return digest_of(msgspec.to_builtins({"blueprint": resolved, "rollout": rollout}))


# --- decisions --------------------------------------------------------------------------------


def _envelope(now: datetime, actor: str, correlation_id: str) -> dict[str, Any]:
    event_id = new_event_id(int(now.timestamp() * 1000))
    return {
        "id": event_id,
        "occurred_at": now,
        "actor": actor,
        "correlation_id": correlation_id or event_id,
    }


def decide_publish_blueprint(
    history: BlueprintHistory,
    base: BlueprintHistory | None,
    spec: BlueprintSpec,
    tasksets: Mapping[str, TasksetHistory],
    rollout: RolloutStrategy,
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    """The next version of the blueprint, or nothing when it would say the same as the latest.

    `base` is the history of `spec.base` (None when it has none); `tasksets` holds the history
    of every taskset an entry names (absent or unpublished ones are refused)."""
    base_version: BlueprintVersion | None = None
    if spec.base:
        if spec.base == spec.name:
            raise BlueprintRefused(f"blueprint {spec.name} cannot extend itself")
        base_version = base.at(spec.base_version) if base is not None else None
        if base_version is None:
            wanted = f" version {spec.base_version}" if spec.base_version else ""
            raise BlueprintRefused(
                f"blueprint {spec.name}: base {spec.base}{wanted} is not published"
            )
    try:
        resolved = resolve_blueprint(
            spec, base_version.resolved if base_version is not None else None
        )
    except BlueprintError as e:
        raise BlueprintRefused(str(e)) from e
    check_rollout(rollout)
    for entry in resolved.entries:
        _check_entry(spec.name, entry, tasksets.get(entry.taskset))
    digest = blueprint_digest(resolved, rollout)
    latest = history.latest
    if latest is not None and latest.digest == digest:
        return []
    previous = {e.taskset for e in latest.resolved.entries} if latest is not None else set()
    return [
        BlueprintPublished(
            **_envelope(now, actor, correlation_id),
            blueprint=spec.name,
            blueprint_version=(latest.version if latest is not None else 0) + 1,
            digest=digest,
            entries=resolved.entries,
            selector=resolved.selector,
            drift_policy=resolved.drift_policy,
            rollout=rollout,
            base=spec.base,
            base_version=base_version.version if base_version is not None else 0,
            removed=sorted(previous - {e.taskset for e in resolved.entries}),
        )
    ]


def _check_entry(blueprint: str, entry: BlueprintEntry, history: TasksetHistory | None) -> None:
    if history is None or not history.exists:
        raise TasksetNotPublished(
            f"blueprint {blueprint}: entry {entry.taskset} names a taskset that has never "
            "been published; publish it first"
        )
    if history.retired:
        raise StateConflict(f"blueprint {blueprint}: entry {entry.taskset} is retired")
    if entry.version > history.version:
        raise BlueprintRefused(
            f"blueprint {blueprint}: entry {entry.taskset} pins version {entry.version}, "
            f"but the latest published version is {history.version}"
        )


def decide_assign_blueprint(
    history: BlueprintHistory,
    cluster: str,
    registered: set[str],
    pinned_version: int,
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    """Assign a cluster to the blueprint, pinned to `pinned_version` (0: follow the latest)."""
    _check_cluster(history, cluster, registered)
    if pinned_version < 0:
        raise InvalidCommand(f"a pinned version is 1 or more, got {pinned_version}")
    if pinned_version and pinned_version not in history.versions:
        raise BlueprintRefused(
            f"blueprint {history.name} has no version {pinned_version} "
            f"(latest is {max(history.versions)})"
        )
    return [
        BlueprintAssigned(
            **_envelope(now, actor, correlation_id),
            blueprint=history.name,
            cluster=cluster,
            pinned_version=pinned_version,
        )
    ]


def decide_unassign_blueprint(
    history: BlueprintHistory,
    cluster: str,
    assigned: bool,
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    if not history.versions:
        raise BlueprintNotFound(f"blueprint {history.name} has never been published")
    if not assigned:
        raise StateConflict(
            f"cluster {cluster} is not assigned to blueprint {history.name} (a selector match "
            "is changed with the cluster's labels)"
        )
    return [
        BlueprintUnassigned(
            **_envelope(now, actor, correlation_id), blueprint=history.name, cluster=cluster
        )
    ]


def decide_force_sync(
    history: BlueprintHistory,
    cluster: str,
    registered: set[str],
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    """Send every entry of the blueprint to `cluster` again (it re-applies them all)."""
    _check_cluster(history, cluster, registered)
    return [
        BlueprintSyncForced(
            **_envelope(now, actor, correlation_id), blueprint=history.name, cluster=cluster
        )
    ]


def _check_cluster(history: BlueprintHistory, cluster: str, registered: set[str]) -> None:
    check_name("cluster", cluster)
    if not history.versions:
        raise BlueprintNotFound(f"blueprint {history.name} has never been published")
    if cluster not in registered:
        raise ClusterNotFound(f"cluster {cluster} is not registered (see `fleetbus cluster ls`)")


def decide_taskset_dependencies(
    taskset: TasksetHistory,
    depends_on: list[str],
    current: Mapping[str, list[str]],
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    """Record what a taskset published on its own depends on, unless it already says so.

    `current` maps every taskset with dependencies to them; a cycle through the new ones is
    refused and named."""
    for name in depends_on:
        check_name("taskset", name)
    wanted = sorted(set(depends_on))
    if taskset.name in wanted:
        raise BlueprintRefused(f"dependsOn cycle: {taskset.name} -> {taskset.name}")
    if wanted == sorted(current.get(taskset.name, [])):
        return []
    graph = {name: list(needs) for name, needs in current.items()}
    graph[taskset.name] = wanted
    for node in [n for needs in graph.values() for n in needs]:
        graph.setdefault(node, [])
    cycle = find_cycle(graph)
    if cycle:
        if taskset.name in cycle[:-1]:
            # Say it from the taskset being published: "app -> base -> app".
            start = cycle.index(taskset.name)
            cycle = [*cycle[start:-1], *cycle[:start], taskset.name]
        raise BlueprintRefused("dependsOn cycle: " + " -> ".join(cycle))
    return [
        TasksetDependenciesSet(
            **_envelope(now, actor, correlation_id), taskset=taskset.name, depends_on=wanted
        )
    ]


# --- services ---------------------------------------------------------------------------------


def blueprint_subject(name: str) -> str:
    return event_subject(BLUEPRINT_AGGREGATE, name)


def assignment_subject(name: str, cluster: str) -> str:
    return event_subject(BLUEPRINT_AGGREGATE, f"{name}.{cluster}")


async def load_blueprint(store: EventStore, name: str) -> tuple[BlueprintHistory, int]:
    """Every version of blueprint `name`, and the sequence it was read at."""
    check_name("blueprint", name)
    subject = blueprint_subject(name)
    history = BlueprintHistory(name=name)
    expected = await store.subject_version(subject)
    if expected == 0:
        return history, 0
    read_up_to = 0
    async for stored in store.read(subject=subject):
        if stored.seq <= expected:
            history = evolve_blueprint(history, stored.event)
            read_up_to = stored.seq
    if read_up_to != expected:
        raise HistoryUnavailable(
            f"the log holds blueprint {name} up to sequence {expected}, but reading it back "
            f"stopped at {read_up_to}; try again"
        )
    return history, expected


@dataclass(frozen=True)
class BlueprintPublishOutcome:
    name: str
    version: int
    digest: str
    changed: bool


async def publish_blueprint(
    store: EventStore,
    spec: BlueprintSpec,
    *,
    actor: str,
    now: datetime,
    rollout: RolloutStrategy | None = None,
    correlation_id: str = "",
) -> BlueprintPublishOutcome:
    history, expected = await load_blueprint(store, spec.name)
    base = (await load_blueprint(store, spec.base))[0] if spec.base else None
    names = {entry.taskset for entry in spec.entries}
    if base is not None:
        for version in base.versions.values():
            names |= {entry.taskset for entry in version.resolved.entries}
    tasksets: dict[str, TasksetHistory] = {}
    for name in sorted(names):
        check_name("taskset", name)
        tasksets[name] = (await load_history(store, name))[0]
    events = decide_publish_blueprint(
        history,
        base,
        spec,
        tasksets,
        rollout or RolloutStrategy(),
        actor=actor,
        now=now,
        correlation_id=correlation_id,
    )
    if not events:
        latest = history.latest
        assert latest is not None
        return BlueprintPublishOutcome(spec.name, latest.version, latest.digest, changed=False)
    await store.append(events, expected=expected)
    published = events[0]
    assert isinstance(published, BlueprintPublished)
    return BlueprintPublishOutcome(
        spec.name, published.blueprint_version, published.digest, changed=True
    )


async def _registered(store: EventStore) -> set[str]:
    return {record.name for record in await list_clusters(store)}


async def assign_blueprint(
    store: EventStore,
    name: str,
    cluster: str,
    *,
    pinned_version: int,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> None:
    history, _ = await load_blueprint(store, name)
    events = decide_assign_blueprint(
        history,
        cluster,
        await _registered(store),
        pinned_version,
        actor=actor,
        now=now,
        correlation_id=correlation_id,
    )
    await store.append(events)


async def unassign_blueprint(
    store: EventStore, name: str, cluster: str, *, actor: str, now: datetime
) -> None:
    history, _ = await load_blueprint(store, name)
    assigned = False
    async for stored in store.read(subject=assignment_subject(name, cluster)):
        assigned = isinstance(stored.event, BlueprintAssigned)
    events = decide_unassign_blueprint(history, cluster, assigned, actor=actor, now=now)
    await store.append(events)


async def force_sync(
    store: EventStore, name: str, cluster: str, *, actor: str, now: datetime
) -> None:
    history, _ = await load_blueprint(store, name)
    events = decide_force_sync(history, cluster, await _registered(store), actor=actor, now=now)
    await store.append(events)


async def dependency_events(
    store: EventStore,
    taskset: str,
    depends_on: list[str],
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    """The event recording a taskset's own dependencies (none if they are already those), to
    append with its publish, so the scheduler never sees the version without them."""
    check_name("taskset", taskset)
    current: dict[str, list[str]] = {}
    async for stored in store.read(subject=f"{EVENTS_PREFIX}.taskset.>"):
        if isinstance(stored.event, TasksetDependenciesSet):
            current[stored.event.taskset] = list(stored.event.depends_on)
    return decide_taskset_dependencies(
        TasksetHistory(name=taskset),
        depends_on,
        current,
        actor=actor,
        now=now,
        correlation_id=correlation_id,
    )


async def list_blueprints(store: EventStore) -> list[BlueprintHistory]:
    """Every blueprint ever published, by name."""
    histories: dict[str, BlueprintHistory] = {}
    async for stored in store.read(subject=f"{EVENTS_PREFIX}.{BLUEPRINT_AGGREGATE}.*"):
        event = stored.event
        if isinstance(event, BlueprintPublished):
            history = histories.get(event.blueprint, BlueprintHistory(name=event.blueprint))
            histories[event.blueprint] = evolve_blueprint(history, event)
    return [histories[name] for name in sorted(histories)]


# --- comparing versions -----------------------------------------------------------------------


class EntryChange(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    change: str
    """`added`, `removed` or `changed`."""
    fields: list[str] = msgspec.field(default_factory=list)
    before: BlueprintEntry | None = None
    after: BlueprintEntry | None = None


def diff_blueprints(before: ResolvedBlueprint, after: ResolvedBlueprint) -> list[EntryChange]:
    """What changes from one version to another, entry by entry, then selector and drift."""
    old = {entry.taskset: entry for entry in before.entries}
    new = {entry.taskset: entry for entry in after.entries}
    changes: list[EntryChange] = []
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            changes.append(EntryChange(taskset=name, change="removed", before=old[name]))
        elif name not in old:
            changes.append(EntryChange(taskset=name, change="added", after=new[name]))
        else:
            fields = [
                field
                for field in ("version", "values", "depends_on")
                if getattr(old[name], field) != getattr(new[name], field)
            ]
            if fields:
                changes.append(
                    EntryChange(
                        taskset=name,
                        change="changed",
                        fields=fields,
                        before=old[name],
                        after=new[name],
                    )
                )
    return changes
