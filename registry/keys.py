"""Key rotation and crypto-shredding, recorded on the log (ids only, never key material).

The keys themselves live in the hub's keyring (`sealing.keyring`), outside the log: a log
that held them would defeat shredding. What the log gets is the fact: which key-encryption
key and data keys replaced which (`KeysRotated`), which data keys of which cluster were
destroyed and why (`DataKeysShredded`), so the audit trail says when each secret became
unreadable. The scheduler reads `DataKeysShredded` of a cluster still registered as a reason
to write its desired state again, sealed with a new key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from events.catalog import DataKeysShredded, Event, KeysRotated
from events.ids import new_event_id
from events.store import EventStore
from registry.clusters import list_clusters
from registry.errors import ClusterNotFound, InvalidCommand
from sealing.envelope import cluster_scope
from sealing.keyring import KeyringState, Rotation
from taskset.names import check_name


class KeyManager(Protocol):
    """What the services need of the keyring (`sealing.keyring.Keyring`)."""

    def rotate(
        self, now: datetime, *, kek: bool = True, scopes: list[str] | None = None
    ) -> Rotation: ...

    def shred(self, scope: str, now: datetime) -> list[str]: ...

    def describe(self) -> KeyringState: ...


def rotation_scopes(data_keys: bool, clusters: Sequence[str]) -> list[str] | None:
    """Which data keys to renew: every scope (None), the named clusters', or none."""
    for cluster in clusters:
        check_name("cluster", cluster)
    if clusters and not data_keys:
        raise InvalidCommand("--cluster names data keys to renew; it cannot go with --kek-only")
    if not data_keys:
        return []
    return [cluster_scope(c) for c in clusters] if clusters else None


def decide_rotated(rotation: Rotation, *, actor: str, now: datetime) -> list[Event]:
    event_id = new_event_id(int(now.timestamp() * 1000))
    return [
        KeysRotated(
            id=event_id,
            occurred_at=now,
            actor=actor,
            correlation_id=event_id,
            kek=rotation.kek,
            previous_kek=rotation.previous_kek if rotation.kek != rotation.previous_kek else "",
            data_keys=rotation.data_keys,
            rewrapped=rotation.rewrapped,
        )
    ]


def decide_shredded(
    cluster: str, key_ids: list[str], *, reason: str, actor: str, now: datetime
) -> list[Event]:
    if not key_ids:
        return []
    event_id = new_event_id(int(now.timestamp() * 1000))
    return [
        DataKeysShredded(
            id=event_id,
            occurred_at=now,
            actor=actor,
            correlation_id=event_id,
            scope=cluster_scope(cluster),
            cluster=cluster,
            key_ids=key_ids,
            reason=reason,
        )
    ]


async def rotate_keys(
    store: EventStore,
    keys: KeyManager,
    *,
    kek: bool,
    data_keys: bool,
    clusters: Sequence[str] = (),
    actor: str,
    now: datetime,
) -> KeysRotated:
    if not kek and not data_keys:
        raise InvalidCommand("nothing to rotate: give the KEK, the data keys, or both")
    scopes = rotation_scopes(data_keys, clusters)
    if clusters:
        registered = {record.name for record in await list_clusters(store)}
        unknown = sorted(set(clusters) - registered)
        if unknown:
            raise ClusterNotFound(
                f"cluster(s) {', '.join(unknown)} not registered (see `fleetbus cluster ls`)"
            )
    rotation = keys.rotate(now, kek=kek, scopes=scopes)
    events = decide_rotated(rotation, actor=actor, now=now)
    await store.append(events)
    event = events[0]
    assert isinstance(event, KeysRotated)
    return event


async def shred_cluster_keys(
    store: EventStore,
    keys: KeyManager,
    cluster: str,
    *,
    reason: str,
    actor: str,
    now: datetime,
) -> DataKeysShredded | None:
    """Destroy every data key of `cluster` (first), then record it; None if it had none."""
    check_name("cluster", cluster)
    key_ids = keys.shred(cluster_scope(cluster), now)
    events = decide_shredded(cluster, key_ids, reason=reason, actor=actor, now=now)
    if not events:
        return None
    await store.append(events)
    event = events[0]
    assert isinstance(event, DataKeysShredded)
    return event
