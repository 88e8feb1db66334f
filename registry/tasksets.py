"""Publishing and retiring tasksets: the application service behind `fleetbus publish`.

Publishing turns a normalized Taskset into an immutable snapshot: a `TasksetPublished` event
with the next version number, the compressed body, its digest, where it goes (placement) and
how it spreads (rollout). The decision is pure (`decide_publish`, `decide_retire` over the
`TasksetHistory` folded by `evolve`); the services around them only load, decide and append:

- the history is the taskset's own subject `fleet.evt.taskset.<name>`; its last sequence is the
  expected version of the append, so two publishers racing cannot both get version N (the
  loser gets `ConcurrencyConflict` and nothing is written);
- identical content (same digest) with the same placement and rollout decides no event: the
  answer is "unchanged", and publishing the same thing twice is safe;
- a Helm source's chart archive is stored on the hub, by content, before the event that names
  it is appended, so no snapshot ever points at a missing chart;
- a snapshot that cannot fit in one NATS message is refused here, with its size and the limit.

Nothing here knows about argparse or HTTP: the CLI and the HTTP API call the same functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

from events.catalog import (
    Event,
    Placement,
    Provenance,
    RolloutStrategy,
    TasksetPublished,
    TasksetRetired,
)
from events.codec import encode_event
from events.ids import new_event_id
from events.store import EventStore
from events.streams import MAX_PAYLOAD
from events.subjects import event_subject
from normalizer import NormalizedSource
from registry.errors import (
    HistoryUnavailable,
    InvalidCommand,
    TasksetAlreadyRetired,
    TasksetNotFound,
    TasksetTooLarge,
)
from taskset.codec import encode_taskset
from taskset.digest import digest_of
from taskset.model import Taskset
from taskset.names import check_name
from taskset.selectors import parse_selector

TASKSET_AGGREGATE = "taskset"


# --- the aggregate ----------------------------------------------------------------------------


class TasksetHistory(msgspec.Struct, frozen=True, kw_only=True):
    """What publishing needs to know about a taskset's past: its last snapshot, if retired."""

    name: str
    version: int = 0
    """`taskset_version` of the last snapshot; 0 when it was never published."""
    digest: str = ""
    placement: Placement = msgspec.field(default_factory=Placement)
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    retired: bool = False
    provenance: Provenance | None = None

    @property
    def exists(self) -> bool:
        return self.version > 0


def evolve(history: TasksetHistory, event: Event) -> TasksetHistory:
    match event:
        case TasksetPublished():
            return msgspec.structs.replace(
                history,
                version=event.taskset_version,
                digest=event.digest,
                placement=event.placement,
                rollout=event.rollout,
                retired=False,
                provenance=event.provenance,
            )
        case TasksetRetired():
            return msgspec.structs.replace(history, retired=True)
    return history


# --- commands and decisions -------------------------------------------------------------------


class PublishTaskset(msgspec.Struct, frozen=True, kw_only=True):
    """Publish `taskset` as the next version, going to `placement`, spreading by `rollout`."""

    taskset: Taskset
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    placement: Placement = msgspec.field(default_factory=Placement)
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    actor: str
    event_id: str
    correlation_id: str = ""
    provenance: Provenance | None = None
    """Where the hub fetched the source from; None for an upload."""


class RetireTaskset(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    reason: str = ""
    actor: str
    event_id: str
    correlation_id: str = ""


def check_placement(placement: Placement) -> Placement:
    for cluster in placement.clusters:
        check_name("cluster", cluster)
    if placement.selector:
        parse_selector(placement.selector)
    return placement


def check_rollout(rollout: RolloutStrategy) -> RolloutStrategy:
    for field in ("batch_size", "max_unavailable", "pause_seconds", "failure_threshold"):
        value = getattr(rollout, field)
        if value < 0:
            raise InvalidCommand(f"rollout {field} must not be negative, got {value}")
    return rollout


def decide_publish(history: TasksetHistory, command: PublishTaskset, now: datetime) -> list[Event]:
    """The snapshot to append, or nothing when the same content is already published as-is.

    A source's new chart version or commit is a new version even when it renders the same:
    the log must say what each cluster runs."""
    taskset = command.taskset
    check_name("taskset", taskset.name)
    placement = check_placement(command.placement)
    rollout = check_rollout(command.rollout)
    if taskset.source is None:
        raise InvalidCommand(f"taskset {taskset.name} has no source information to publish")
    digest = digest_of(taskset)
    if (
        history.exists
        and not history.retired
        and history.digest == digest
        and history.placement == placement
        and history.rollout == rollout
        and (command.provenance is None or history.provenance == command.provenance)
    ):
        return []
    body = encode_taskset(taskset)
    event = TasksetPublished(
        id=command.event_id,
        occurred_at=now,
        actor=command.actor,
        correlation_id=command.correlation_id or command.event_id,
        causation_id=command.event_id,
        taskset=taskset.name,
        taskset_version=history.version + 1,
        digest=digest,
        source_digest=taskset.source.digest,
        format=taskset.source.format,
        body=body,
        body_size=len(body),
        placement=placement,
        rollout=rollout,
        values=command.values,
        chart_archive=taskset.source.chart_archive,
        provenance=command.provenance,
    )
    event_size = len(encode_event(event))
    if event_size > MAX_PAYLOAD:
        raise TasksetTooLarge(taskset.name, len(body), event_size, MAX_PAYLOAD)
    return [event]


def decide_retire(history: TasksetHistory, command: RetireTaskset, now: datetime) -> list[Event]:
    if not history.exists:
        raise TasksetNotFound(f"taskset {command.name} was never published")
    if history.retired:
        raise TasksetAlreadyRetired(f"taskset {command.name} is already retired")
    return [
        TasksetRetired(
            id=command.event_id,
            occurred_at=now,
            actor=command.actor,
            correlation_id=command.correlation_id or command.event_id,
            causation_id=command.event_id,
            taskset=command.name,
            reason=command.reason,
        )
    ]


class RollbackTaskset(msgspec.Struct, frozen=True, kw_only=True):
    """Publish snapshot `to_version` again, as the next version."""

    name: str
    to_version: int
    actor: str
    event_id: str
    correlation_id: str = ""


def decide_rollback(
    history: TasksetHistory,
    target: TasksetPublished | None,
    command: RollbackTaskset,
    now: datetime,
) -> list[Event]:
    """Version `to_version`'s snapshot as the next version, caused by that version's event;
    nothing when it is what is published now. Placement and rollout stay as they are now."""
    if not history.exists:
        raise TasksetNotFound(f"taskset {command.name} was never published")
    if target is None:
        raise InvalidCommand(
            f"taskset {command.name} has no version {command.to_version}; its versions are "
            f"1 to {history.version}"
        )
    if not history.retired and history.digest == target.digest:
        return []
    return [
        msgspec.structs.replace(
            target,
            id=command.event_id,
            occurred_at=now,
            actor=command.actor,
            correlation_id=command.correlation_id or command.event_id,
            causation_id=target.id,
            taskset_version=history.version + 1,
            placement=history.placement,
            rollout=history.rollout,
            rollback_of=target.taskset_version,
        )
    ]


# --- the services -----------------------------------------------------------------------------


class ChartArchives(Protocol):
    """Where chart archives are kept by content address (`charts.store.ChartStore`)."""

    async def put(self, archive: bytes) -> str: ...

    async def contains(self, address: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    taskset: str
    version: int
    """The version now current: the new one, or the existing one when unchanged."""
    digest: str
    changed: bool
    sequence: int = 0
    """Stream sequence of the appended event (0 when unchanged)."""
    body_size: int = 0


@dataclass(frozen=True, slots=True)
class RetireOutcome:
    taskset: str
    version: int
    sequence: int


def taskset_subject(name: str) -> str:
    return event_subject(TASKSET_AGGREGATE, name)


async def load_history(store: EventStore, name: str) -> tuple[TasksetHistory, int]:
    """The taskset's history and the stream sequence it was read at (the expected version).

    The last event on the subject is usually the last snapshot, which says everything needed;
    only after a retirement is the whole (short) history folded.
    """
    check_name("taskset", name)
    subject = taskset_subject(name)
    history = TasksetHistory(name=name)
    expected = await store.subject_version(subject)
    if expected == 0:
        return history, 0
    last = [stored async for stored in store.read(from_seq=expected, subject=subject)]
    if last and isinstance(last[0].event, TasksetPublished):
        return evolve(history, last[0].event), expected
    read_up_to = 0
    async for stored in store.read(subject=subject):
        if stored.seq <= expected:
            history = evolve(history, stored.event)
            read_up_to = stored.seq
    if read_up_to != expected:
        # Deciding on a partial history could publish "version 1" again; refuse instead.
        raise HistoryUnavailable(
            f"the log holds taskset {name} up to sequence {expected}, but reading it back "
            f"stopped at {read_up_to}; try again"
        )
    return history, expected


def event_id_at(now: datetime) -> str:
    return new_event_id(int(now.timestamp() * 1000))


async def publish_taskset(
    store: EventStore,
    charts: ChartArchives,
    source: NormalizedSource,
    *,
    actor: str,
    now: datetime,
    placement: Placement | None = None,
    rollout: RolloutStrategy | None = None,
    correlation_id: str = "",
    preceding: Sequence[Event] = (),
    provenance: Provenance | None = None,
    admit: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
) -> PublishOutcome:
    """Publish a normalized source as the taskset's next version, unless nothing changed.

    `preceding` events of the same taskset (its dependencies) are appended in the same atomic
    batch, before the snapshot, or alone when the snapshot is unchanged. `admit` sees the
    decided events before anything is written and may refuse them (a project's quotas)."""
    taskset = source.taskset
    history, expected = await load_history(store, taskset.name)
    command = PublishTaskset(
        taskset=taskset,
        values=source.values,
        placement=placement or Placement(),
        rollout=rollout or RolloutStrategy(),
        actor=actor,
        event_id=event_id_at(now),
        correlation_id=correlation_id,
        provenance=provenance,
    )
    events = decide_publish(history, command, now)
    if not events:
        if preceding:
            await store.append(list(preceding), expected=expected)
        return PublishOutcome(taskset.name, history.version, history.digest, changed=False)
    if admit is not None:
        await admit(events)
    await _keep_chart_archive(charts, source)
    result = await store.append([*preceding, *events], expected=expected)
    published = events[0]
    assert isinstance(published, TasksetPublished)
    return PublishOutcome(
        taskset.name,
        published.taskset_version,
        published.digest,
        changed=True,
        sequence=result.sequences[len(preceding)],
        body_size=published.body_size,
    )


async def _keep_chart_archive(charts: ChartArchives, source: NormalizedSource) -> None:
    address = source.taskset.source.chart_archive if source.taskset.source else ""
    if not address:
        return
    if source.chart_archive is None:
        if not await charts.contains(address):
            raise InvalidCommand(
                f"taskset {source.taskset.name} names chart archive {address}, which the hub "
                "does not hold; publish the chart itself"
            )
        return
    stored = await charts.put(source.chart_archive)
    if stored != address:
        raise InvalidCommand(
            f"the chart archive given hashes to {stored}, not to {address} as the taskset says"
        )


async def load_version(store: EventStore, name: str, version: int) -> TasksetPublished | None:
    """The snapshot of version `version` of taskset `name`, from its history."""
    async for stored in store.read(subject=taskset_subject(name)):
        event = stored.event
        if isinstance(event, TasksetPublished) and event.taskset_version == version:
            return event
    return None


async def rollback_taskset(
    store: EventStore,
    name: str,
    to_version: int,
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> PublishOutcome:
    """Re-publish snapshot `to_version` as the next version (clusters upgrade to it)."""
    if to_version < 1:
        raise InvalidCommand(f"--to-version must be 1 or more, got {to_version}")
    history, expected = await load_history(store, name)
    target = await load_version(store, name, to_version) if history.exists else None
    command = RollbackTaskset(
        name=name,
        to_version=to_version,
        actor=actor,
        event_id=event_id_at(now),
        correlation_id=correlation_id,
    )
    events = decide_rollback(history, target, command, now)
    if not events:
        return PublishOutcome(name, history.version, history.digest, changed=False)
    result = await store.append(events, expected=expected)
    published = events[0]
    assert isinstance(published, TasksetPublished)
    return PublishOutcome(
        name,
        published.taskset_version,
        published.digest,
        changed=True,
        sequence=result.sequences[0],
        body_size=published.body_size,
    )


async def retire_taskset(
    store: EventStore,
    name: str,
    *,
    actor: str,
    now: datetime,
    reason: str = "",
    correlation_id: str = "",
) -> RetireOutcome:
    """Retire a published taskset: clusters remove it (running preDelete first)."""
    history, expected = await load_history(store, name)
    command = RetireTaskset(
        name=name,
        reason=reason,
        actor=actor,
        event_id=event_id_at(now),
        correlation_id=correlation_id,
    )
    events = decide_retire(history, command, now)
    result = await store.append(events, expected=expected)
    return RetireOutcome(name, history.version, result.sequences[0])
