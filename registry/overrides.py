"""Overrides of a taskset: set, remove, list and preview them.

An override is an aggregate on `fleet.evt.override.<taskset>.<name>`. Setting one is checked
against the taskset's latest snapshot before anything is written: values overrides need a
taskset published from a Helm chart; every patch must name an object the snapshot has, and
must apply to it; the cluster of a cluster override must be registered; a selector must parse.
A refused override is refused with the object, patch and reason named, and nothing is written.

`preview_overrides` shows what the overrides do on one cluster: a unified diff of the YAML of
each object, between the snapshot and what that cluster gets, computed with the same pure
functions (`taskset.overrides`) the scheduler uses. Secret values are masked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

from events.catalog import (
    Event,
    OverrideRemoved,
    OverrideSet,
    Provenance,
    TasksetPublished,
    TasksetRetired,
)
from events.ids import new_event_id
from events.store import EventStore
from events.subjects import EVENTS_PREFIX, event_subject
from registry.clusters import list_clusters
from registry.errors import (
    ClusterNotFound,
    OverrideNotFound,
    OverrideRefused,
    StateConflict,
    TasksetNotPublished,
)
from sealing.errors import SealingError
from sealing.trees import open_taskset, open_tree
from taskset.codec import decode_taskset
from taskset.errors import FleetbusError
from taskset.model import Taskset
from taskset.names import check_name
from taskset.overrides import (
    HelmRenderer,
    Override,
    OverrideError,
    Snapshot,
    apply_patches,
    customize,
    missing_targets,
    overrides_for,
    parse_patches,
    preview_diff,
)
from taskset.selectors import InvalidSelector, parse_selector

OVERRIDE_AGGREGATE = "override"


class PreparedRenderer(HelmRenderer, Protocol):
    async def prepare(self, chart_archive_digest: str) -> None: ...


@dataclass(frozen=True)
class LatestSnapshot:
    """The newest published version of a taskset, as overrides are checked against it."""

    name: str
    version: int
    format: str
    snapshot: Snapshot
    retired: bool
    provenance: Provenance | None = None
    """Where the hub fetched it from, when it came from a remote source."""


class SetOverride(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    name: str
    cluster: str = ""
    selector: str = ""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    patches: list[dict[str, Any]] = msgspec.field(default_factory=list)
    sensitive: list[str] = msgspec.field(default_factory=list)
    """Dotted paths of `values` to seal whatever their key or shape (`db.password`)."""
    actor: str
    correlation_id: str = ""


def _has_path(values: Any, path: str) -> bool:
    """Whether the dotted path (`a.b`, `hosts[0].token`) names an entry of `values`."""
    current = values
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            if not isinstance(current, dict) or name not in current:
                return False
            current = current[name]
        for index_text in rest.split("[") if rest else []:
            index_text = index_text.rstrip("]")
            if not index_text.isdigit() or not isinstance(current, list):
                return False
            if int(index_text) >= len(current):
                return False
            current = current[int(index_text)]
    return True


def decide_set_override(
    latest: LatestSnapshot | None,
    registered: Iterable[str],
    command: SetOverride,
    now: datetime,
) -> list[Event]:
    """Check an override against the latest snapshot and the registry; the event to append."""
    check_name("taskset", command.taskset)
    check_name("override", command.name)
    if bool(command.cluster) == bool(command.selector):
        raise OverrideRefused("an override targets exactly one of a cluster or a selector")
    if command.cluster:
        check_name("cluster", command.cluster)
        if command.cluster not in set(registered):
            raise ClusterNotFound(
                f"cluster {command.cluster} is not registered (see `fleetbus cluster ls`)"
            )
    if command.selector:
        try:
            parse_selector(command.selector)
        except InvalidSelector as e:
            raise OverrideRefused(str(e)) from e
    if bool(command.values) == bool(command.patches):
        raise OverrideRefused("an override sets exactly one of Helm values or patches")
    for path in command.sensitive:
        if not command.values or not _has_path(command.values, path):
            raise OverrideRefused(
                f"override {command.name}: sensitive path {path!r} names no entry of its values"
            )
    if latest is None:
        raise TasksetNotPublished(f"taskset {command.taskset} has never been published")
    if latest.retired:
        raise StateConflict(f"taskset {command.taskset} is retired")
    if command.values and latest.format != "helm":
        raise OverrideRefused(
            f"override {command.name} sets Helm values, but taskset {command.taskset} "
            f"v{latest.version} was published from {latest.format}, not a Helm chart; "
            "use a patch instead"
        )
    if command.patches:
        try:
            patches = parse_patches(command.patches, f"override {command.name}")
            absent = missing_targets(latest.snapshot.taskset, patches)
            if absent:
                raise OverrideRefused(
                    f"override {command.name} targets "
                    + ", ".join(str(target) for target in absent)
                    + f", which taskset {command.taskset} v{latest.version} does not have"
                )
            apply_patches(latest.snapshot.taskset, patches, f"override {command.name}")
        except OverrideError as e:
            raise OverrideRefused(str(e)) from e
    event_id = new_event_id(int(now.timestamp() * 1000))
    return [
        OverrideSet(
            id=event_id,
            occurred_at=now,
            actor=command.actor,
            correlation_id=command.correlation_id or event_id,
            taskset=command.taskset,
            name=command.name,
            cluster=command.cluster,
            selector=command.selector,
            values=command.values,
            patches=command.patches,
            sensitive=command.sensitive,
        )
    ]


def decide_remove_override(
    current: OverrideSet | None,
    taskset: str,
    name: str,
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    if current is None:
        raise OverrideNotFound(f"taskset {taskset} has no override named {name}")
    event_id = new_event_id(int(now.timestamp() * 1000))
    return [
        OverrideRemoved(
            id=event_id,
            occurred_at=now,
            actor=actor,
            correlation_id=correlation_id or event_id,
            taskset=taskset,
            name=name,
        )
    ]


# --- loading ------------------------------------------------------------------------------------


def override_subject(taskset: str, name: str) -> str:
    return event_subject(OVERRIDE_AGGREGATE, f"{taskset}.{name}")


async def load_latest_snapshot(store: EventStore, taskset: str) -> LatestSnapshot | None:
    check_name("taskset", taskset)
    if await store.subject_version(event_subject("taskset", taskset)) == 0:
        return None
    latest: TasksetPublished | None = None
    retired = False
    async for stored in store.read(subject=event_subject("taskset", taskset)):
        match stored.event:
            case TasksetPublished():
                latest, retired = stored.event, False
            case TasksetRetired():
                retired = True
    if latest is None:
        return None
    body = decode_taskset(latest.body)
    archive = latest.chart_archive or (body.source.chart_archive if body.source else "")
    values = latest.values
    if store.sealer is not None:
        # Opened in memory for re-rendering and previews; whoever shows it masks it again.
        body = open_taskset(store.sealer.keys, body)
        values = open_tree(store.sealer.keys, values)
    return LatestSnapshot(
        name=taskset,
        version=latest.taskset_version,
        format=latest.format,
        snapshot=Snapshot(taskset=body, values=values, chart_archive=archive),
        retired=retired,
        provenance=latest.provenance,
    )


async def load_override(
    store: EventStore, taskset: str, name: str
) -> tuple[OverrideSet | None, int]:
    subject = override_subject(taskset, name)
    expected = await store.subject_version(subject)
    current: OverrideSet | None = None
    if expected:
        async for stored in store.read(subject=subject):
            if stored.seq > expected:
                break
            current = stored.event if isinstance(stored.event, OverrideSet) else None
    return current, expected


async def list_overrides(store: EventStore, taskset: str) -> list[OverrideSet]:
    """The overrides of `taskset` in force, in the order they apply (selector, then cluster)."""
    check_name("taskset", taskset)
    current: dict[str, OverrideSet] = {}
    async for stored in store.read(subject=f"{EVENTS_PREFIX}.{OVERRIDE_AGGREGATE}.{taskset}.>"):
        match stored.event:
            case OverrideSet():
                current[stored.event.name] = stored.event
            case OverrideRemoved():
                current.pop(stored.event.name, None)
    return sorted(current.values(), key=lambda o: (1 if o.cluster else 0, o.name))


def _opened(store: EventStore, event: OverrideSet, cluster: str) -> OverrideSet:
    """An override with its sealed values opened (in memory, for a preview)."""
    if store.sealer is None or (event.cluster and event.cluster != cluster):
        return event
    keys = store.sealer.keys
    try:
        return msgspec.structs.replace(
            event, values=open_tree(keys, event.values), patches=open_tree(keys, event.patches)
        )
    except SealingError as e:
        raise OverrideRefused(f"override {event.name}: {e}") from e


def as_override(event: OverrideSet) -> Override:
    return Override(
        taskset=event.taskset,
        name=event.name,
        cluster=event.cluster,
        selector=event.selector,
        values=event.values,
        patches=parse_patches(event.patches, f"override {event.name}") if event.patches else (),
        revision=event.id,
    )


# --- services -----------------------------------------------------------------------------------


async def set_override(store: EventStore, command: SetOverride, now: datetime) -> OverrideSet:
    latest = await load_latest_snapshot(store, command.taskset)
    registered = [record.name for record in await list_clusters(store)]
    _, expected = await load_override(store, command.taskset, command.name)
    events = decide_set_override(latest, registered, command, now)
    await store.append(events, expected=expected)
    event = events[0]
    assert isinstance(event, OverrideSet)
    return event


async def remove_override(
    store: EventStore,
    taskset: str,
    name: str,
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> OverrideRemoved:
    check_name("taskset", taskset)
    check_name("override", name)
    current, expected = await load_override(store, taskset, name)
    events = decide_remove_override(
        current, taskset, name, actor=actor, now=now, correlation_id=correlation_id
    )
    await store.append(events, expected=expected)
    event = events[0]
    assert isinstance(event, OverrideRemoved)
    return event


@dataclass(frozen=True)
class OverridePreview:
    taskset: str
    version: int
    cluster: str
    overrides: list[str]
    diff: str
    result: Taskset


def preview_for(
    latest: LatestSnapshot,
    cluster: str,
    labels: Mapping[str, str],
    overrides: Iterable[Override],
    renderer: HelmRenderer | None,
) -> OverridePreview:
    """Pure: what the overrides make of the latest snapshot on one cluster."""
    applicable = overrides_for(cluster, labels, overrides)
    try:
        result = customize(latest.snapshot, applicable, renderer)
    except FleetbusError as e:
        raise OverrideRefused(f"on cluster {cluster}: {e}") from e
    return OverridePreview(
        taskset=latest.name,
        version=latest.version,
        cluster=cluster,
        overrides=[o.name for o in applicable],
        diff=preview_diff(latest.snapshot.taskset, result),
        result=result,
    )


async def preview_overrides(
    store: EventStore,
    taskset: str,
    cluster: str,
    renderer: PreparedRenderer | None = None,
) -> OverridePreview:
    check_name("cluster", cluster)
    latest = await load_latest_snapshot(store, taskset)
    if latest is None:
        raise TasksetNotPublished(f"taskset {taskset} has never been published")
    clusters = {record.name: record for record in await list_clusters(store)}
    if cluster not in clusters:
        raise ClusterNotFound(f"cluster {cluster} is not registered")
    overrides = [
        as_override(_opened(store, o, cluster)) for o in await list_overrides(store, taskset)
    ]
    if renderer is not None and latest.snapshot.chart_archive and any(o.values for o in overrides):
        await renderer.prepare(latest.snapshot.chart_archive)
    return preview_for(latest, cluster, clusters[cluster].labels, overrides, renderer)
