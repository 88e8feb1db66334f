"""The hub's access service folds cluster events one cluster at a time.

Deriving a cluster's user key is an Ed25519 key pair; a fold that derived every registered
cluster's key at every event made registering a fleet quadratic (10,000 simulated clusters
never finished registering). These tests count the derivations and check the revocations
still come out as the whole-set fold says (`access.permissions.evolve_revocations`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from access.account_push import AccountPublisher
from access.nats_accounts import NatsAuthority
from access.permissions import ClusterAccess
from access.service import AccessState, ClusterAccessService
from events import edges
from events.catalog import ClusterDeregistered, ClusterHealthChanged, ClusterRegistered, Event
from events.ids import new_event_id
from events.replay import StoredEvent
from events.store import EventStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class CountingAccess(ClusterAccessService):
    """The service with user keys named after the cluster, counting each derivation."""

    derived = 0

    def _key_of(self, access: ClusterAccess) -> str | None:
        self.derived += 1
        return f"U-{access.name}-{access.fingerprint or access.connection}"

    def fleet_account_jwt(self) -> str:
        return "account-jwt"

    def _project_key(self, project: str) -> str:
        return f"A-{project}"

    def account_jwt(self, name: str) -> str:
        return f"account-jwt-{name}"


def service(tmp_path: Path) -> CountingAccess:
    return CountingAccess(
        cast(EventStore, None),
        authority=cast(NatsAuthority, None),
        publisher=cast(AccountPublisher, None),
        state_dir=tmp_path,
    )


def stored(seq: int, event: Event) -> StoredEvent:
    return StoredEvent(seq=seq, subject=event.subject, stored_at=NOW, event=event)


def registered(name: str, fingerprint: str = "", *, client: bool = False) -> ClusterRegistered:
    labels = {edges.CONNECTION_LABEL: edges.CLIENT} if client else {}
    return ClusterRegistered(
        id=new_event_id(),
        occurred_at=NOW,
        actor="test",
        cluster=name,
        labels=labels,
        certificate_fingerprint=fingerprint,
    )


def test_registering_a_fleet_derives_each_clusters_key_once(tmp_path: Path) -> None:
    access = service(tmp_path)
    for seq in range(1, 301):
        access.evolve(stored(seq, registered(f"sim-{seq}", client=True)))
    assert len(access.clusters) == 300
    assert access.derived == 300
    assert access.revocations == {}


def test_the_one_cluster_fold_revokes_what_the_whole_set_fold_revokes(tmp_path: Path) -> None:
    access = service(tmp_path)
    events: list[Event] = [
        registered("alpha", "aa"),
        registered("beta", "bb"),
        registered("sim-1", client=True),
        registered("alpha", "cc"),  # a new certificate: the old key is revoked
        ClusterDeregistered(id=new_event_id(), occurred_at=NOW, actor="test", cluster="beta"),
        ClusterDeregistered(id=new_event_id(), occurred_at=NOW, actor="test", cluster="sim-1"),
        registered("sim-1", client=True),  # a client's key is its name's: admitted again
    ]
    for seq, event in enumerate(events, start=1):
        access.evolve(stored(seq, event))
    at = int(NOW.timestamp()) + 1
    assert access.revocations == {"U-alpha-aa": at, "U-beta-bb": at}
    assert set(access.clusters) == {"alpha", "sim-1"}
    assert access.clusters["alpha"].fingerprint == "cc"


class CountingState(AccessState):
    writes = 0

    def write(self, applied_seq: int, clusters: Mapping[str, ClusterAccess], revoked: int) -> None:
        self.writes += 1
        super().write(applied_seq, clusters, revoked)


class NoPush:
    async def push(self, jwts: Sequence[str], *, within: float = 15.0) -> int:
        return 1


async def test_cluster_events_that_change_no_registration_are_applied_without_a_rewrite(
    tmp_path: Path,
) -> None:
    access = service(tmp_path)
    access.publisher = cast(AccountPublisher, NoPush())
    state = CountingState(tmp_path / "access.json")
    access.state = state
    for seq in range(1, 101):
        access.evolve(stored(seq, registered(f"sim-{seq}", client=True)))
    await access.apply(100)
    assert state.writes == 1
    for seq in range(101, 151):
        health = ClusterHealthChanged(
            id=new_event_id(),
            occurred_at=NOW,
            actor="hub",
            cluster="sim-7",
            healthy=seq % 2 == 0,
            connected=seq % 2 == 0,
        )
        access.evolve(stored(seq, health))
        await access.apply(seq)
    assert access.applied_seq == 150
    assert state.writes == 1
    access.evolve(stored(151, registered("sim-101", client=True)))
    await access.apply(151)
    assert state.writes == 2
    assert "sim-101" in json.loads((tmp_path / "access.json").read_text())["clusters"]
