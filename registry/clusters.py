"""The cluster registry: register, relabel and deregister clusters.

A cluster is an aggregate on `fleet.evt.cluster.<name>`. Decisions are pure
(`decide_register`, `decide_labels`, `decide_deregister` over a `ClusterRecord` folded by
`evolve_cluster`); the services load the cluster's own events, decide, and append conditionally
on the subject's last sequence, so two operators racing on one cluster cannot both win.

Registering a name that is registered is an error; a deregistered name may be registered again
(its history stays on the log). Names are DNS-1123 labels; labels use Kubernetes label syntax.
Nothing here knows about argparse or HTTP: the CLI and the HTTP API call the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import msgspec

from events.catalog import (
    ClusterDeregistered,
    ClusterDrainStarted,
    ClusterLabelsChanged,
    ClusterRegistered,
    Event,
)
from events.ids import new_event_id
from events.store import EventStore
from events.subjects import EVENTS_PREFIX, event_subject
from registry.errors import ClusterAlreadyRegistered, ClusterNotFound, InvalidCommand
from taskset.names import check_name
from taskset.selectors import InvalidLabel, check_labels, label_key_problem

CLUSTER_AGGREGATE = "cluster"


class ClusterRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    registered: bool = False
    registered_at: datetime | None = None
    certificate_fingerprint: str = ""
    draining: bool = False


def evolve_cluster(record: ClusterRecord, event: Event) -> ClusterRecord:
    match event:
        case ClusterRegistered():
            return ClusterRecord(
                name=event.cluster,
                labels=dict(event.labels),
                registered=True,
                registered_at=event.occurred_at,
                certificate_fingerprint=event.certificate_fingerprint,
            )
        case ClusterLabelsChanged():
            return msgspec.structs.replace(record, labels=dict(event.labels))
        case ClusterDrainStarted():
            return msgspec.structs.replace(record, draining=True)
        case ClusterDeregistered():
            return msgspec.structs.replace(record, registered=False, draining=False)
    return record


def parse_label_arguments(words: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """`k=v` sets a label, `k-` removes one (as `kubectl label` does)."""
    set_labels: dict[str, str] = {}
    remove: list[str] = []
    for word in words:
        key, sep, value = word.partition("=")
        if sep:
            set_labels[key] = value
        elif word.endswith("-") and word[:-1]:
            remove.append(word[:-1])
        else:
            raise InvalidCommand(f"expected KEY=VALUE or KEY- (to remove), got {word!r}")
    return set_labels, remove


def _checked_labels(labels: Mapping[str, str]) -> dict[str, str]:
    try:
        return check_labels(labels)
    except InvalidLabel as e:
        raise InvalidCommand(str(e)) from e


def _envelope(now: datetime, actor: str, correlation_id: str) -> dict[str, object]:
    event_id = new_event_id(int(now.timestamp() * 1000))
    return {
        "id": event_id,
        "occurred_at": now,
        "actor": actor,
        "correlation_id": correlation_id or event_id,
    }


def decide_register(
    record: ClusterRecord,
    labels: Mapping[str, str],
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
    certificate_fingerprint: str = "",
) -> list[Event]:
    check_name("cluster", record.name)
    if record.registered:
        raise ClusterAlreadyRegistered(
            f"cluster {record.name} is already registered; change its labels with "
            f"`fleetbus cluster label {record.name} KEY=VALUE`"
        )
    return [
        ClusterRegistered(
            **_envelope(now, actor, correlation_id),  # type: ignore[arg-type]
            cluster=record.name,
            labels=_checked_labels(labels),
            certificate_fingerprint=certificate_fingerprint,
        )
    ]


def decide_labels(
    record: ClusterRecord,
    set_labels: Mapping[str, str],
    remove: Iterable[str],
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> list[Event]:
    if not record.registered:
        raise ClusterNotFound(f"cluster {record.name} is not registered")
    removing = list(remove)
    for key in removing:
        problem = label_key_problem(key)
        if problem:
            raise InvalidCommand(f"invalid label key {key!r}: {problem}")
    labels = dict(record.labels)
    labels.update(_checked_labels(set_labels))
    for key in removing:
        labels.pop(key, None)
    if labels == record.labels:
        return []
    return [
        ClusterLabelsChanged(
            **_envelope(now, actor, correlation_id),  # type: ignore[arg-type]
            cluster=record.name,
            labels=dict(sorted(labels.items())),
        )
    ]


def decide_drain(
    record: ClusterRecord, *, actor: str, now: datetime, correlation_id: str = ""
) -> list[Event]:
    """Start removing every taskset from the cluster; nothing when it is draining already."""
    if not record.registered:
        raise ClusterNotFound(f"cluster {record.name} is not registered")
    if record.draining:
        return []
    return [
        ClusterDrainStarted(
            **_envelope(now, actor, correlation_id),  # type: ignore[arg-type]
            cluster=record.name,
        )
    ]


def decide_deregister(
    record: ClusterRecord, *, actor: str, now: datetime, correlation_id: str = ""
) -> list[Event]:
    if not record.registered:
        raise ClusterNotFound(f"cluster {record.name} is not registered")
    return [
        ClusterDeregistered(
            **_envelope(now, actor, correlation_id),  # type: ignore[arg-type]
            cluster=record.name,
        )
    ]


# --- services ---------------------------------------------------------------------------------


def cluster_subject(name: str) -> str:
    return event_subject(CLUSTER_AGGREGATE, name)


async def load_cluster(store: EventStore, name: str) -> tuple[ClusterRecord, int]:
    """The cluster as its own events say, and the sequence to expect when appending."""
    check_name("cluster", name)
    subject = cluster_subject(name)
    expected = await store.subject_version(subject)
    record = ClusterRecord(name=name)
    if expected:
        async for stored in store.read(subject=subject):
            if stored.seq <= expected:
                record = evolve_cluster(record, stored.event)
    return record, expected


async def register_cluster(
    store: EventStore,
    name: str,
    labels: Mapping[str, str],
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
    certificate_fingerprint: str = "",
) -> ClusterRecord:
    record, expected = await load_cluster(store, name)
    events = decide_register(
        record,
        labels,
        actor=actor,
        now=now,
        correlation_id=correlation_id,
        certificate_fingerprint=certificate_fingerprint,
    )
    await store.append(events, expected=expected)
    return _folded(record, events)


async def change_cluster_labels(
    store: EventStore,
    name: str,
    set_labels: Mapping[str, str],
    remove: Iterable[str] = (),
    *,
    actor: str,
    now: datetime,
    correlation_id: str = "",
) -> ClusterRecord:
    record, expected = await load_cluster(store, name)
    events = decide_labels(
        record, set_labels, remove, actor=actor, now=now, correlation_id=correlation_id
    )
    await store.append(events, expected=expected)
    return _folded(record, events)


async def deregister_cluster(
    store: EventStore, name: str, *, actor: str, now: datetime, correlation_id: str = ""
) -> ClusterRecord:
    record, expected = await load_cluster(store, name)
    events = decide_deregister(record, actor=actor, now=now, correlation_id=correlation_id)
    await store.append(events, expected=expected)
    return _folded(record, events)


async def drain_cluster(
    store: EventStore, name: str, *, actor: str, now: datetime, correlation_id: str = ""
) -> ClusterRecord:
    """Start removing every taskset from the cluster (`decide_drain`)."""
    record, expected = await load_cluster(store, name)
    events = decide_drain(record, actor=actor, now=now, correlation_id=correlation_id)
    if events:
        await store.append(events, expected=expected)
    return _folded(record, events)


async def list_clusters(
    store: EventStore, *, include_deregistered: bool = False
) -> list[ClusterRecord]:
    """Every cluster, folded from the registry's events, by name."""
    records: dict[str, ClusterRecord] = {}
    async for stored in store.read(subject=f"{EVENTS_PREFIX}.{CLUSTER_AGGREGATE}.>"):
        name = getattr(stored.event, "cluster", None)
        if isinstance(name, str):
            records[name] = evolve_cluster(
                records.get(name, ClusterRecord(name=name)), stored.event
            )
    return [
        record
        for name, record in sorted(records.items())
        if record.registered or include_deregistered
    ]


def _folded(record: ClusterRecord, events: Iterable[Event]) -> ClusterRecord:
    for event in events:
        record = evolve_cluster(record, event)
    return record
