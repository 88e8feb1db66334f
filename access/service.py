"""Keeps the hub's NATS accounts equal to the registered set of clusters, on every server.

The set of clusters is never stored anywhere but the log: `ClusterAccessService` folds the
`fleet.evt.cluster.>` events at start (`access.permissions.evolve_access`), follows them, and
whenever a certificate stops being admitted (a cluster removed, re-registered with a new
certificate, switched between leaf and client) adds its user key to the FLEET account's
revocations and pushes the account JWT to the resolver (`access.account_push`): every server of
the hub refuses the key from then on and closes its connections, leaf connections included,
with no config rewritten and no reload. It deletes the consumers the revoked clusters' mirrors
had (`access.consumer_gate`) and records the last event it has made effective, which is what the
API's cluster registration and deregistration wait for. A default-project registration needs
no push: the cluster's user JWT, signed by the FLEET account, is in its bundle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from access.account_push import AccountPublisher
from access.consumer_gate import ConsumerGate
from access.errors import AccountTooLarge
from access.nats_accounts import FLEET_ACCOUNT, NatsAuthority, ProjectLimits, account_of_project
from access.permissions import (
    ClusterAccess,
    current_revocations,
    evolve_access,
    evolve_revocations,
    revoked_clusters,
    user_key_of,
)
from access.private_files import write_private
from access.project_links import AccountLinks, account_links
from events import subjects
from events.store import EventStore, StoredEvent
from events.tasks import cancel_and_wait
from taskset.projects import project_of

log = logging.getLogger(__name__)

CLUSTER_EVENTS = f"{subjects.EVENTS_PREFIX}.cluster.>"
MAX_ACCOUNT_JWT_BYTES = 7 << 20
"""The largest account JWT the hub pushes: every server template's `max_payload` is 8 MB, and
the JWT travels in one message to the resolver."""


@dataclass
class AccessState:
    """The registered set the hub's NATS accounts reflect, as of the last cluster event that
    changed it (events that change no registration leave the file alone)."""

    path: Path

    def write(self, applied_seq: int, clusters: Mapping[str, ClusterAccess], revoked: int) -> None:
        admitted = {name: access.fingerprint for name, access in sorted(clusters.items())}
        write_private(
            self.path,
            orjson.dumps({"applied_seq": applied_seq, "clusters": admitted, "revoked": revoked}),
        )


def access_state(root: Path) -> AccessState:
    return AccessState(root / "access.json")


@dataclass(frozen=True)
class AccountDocument:
    """What the hub's clusters put into one account's JWT: the revoked keys (as folded, before
    expired ones are dropped at signing) and the links to other accounts."""

    revocations: tuple[tuple[str, int], ...]
    links: AccountLinks


class ClusterAccessService:
    """Keeps the accounts' revocations, and the links of the project clusters, equal to what
    the log says, on every server."""

    def __init__(
        self,
        store: EventStore,
        *,
        authority: NatsAuthority,
        publisher: AccountPublisher,
        state_dir: Path,
        consumer_gate: ConsumerGate | None = None,
    ) -> None:
        self.store = store
        self.authority = authority
        self.publisher = publisher
        self.consumer_gate = consumer_gate
        self.clusters: dict[str, ClusterAccess] = {}
        self.revocations: dict[str, int] = {}
        self.state = access_state(state_dir)
        self.applied_seq = 0
        self._applied = asyncio.Condition()
        self._pushed: dict[str, AccountDocument] | None = None
        """What each account's JWT last pushed carried (None: nothing pushed yet)."""
        self._effective: dict[str, ClusterAccess] = {}
        self._unwritten = True
        """The registered set changed since `apply` last recorded it."""
        self.pushing = asyncio.Lock()
        """One account push at a time (the project account service takes it too): a resolver
        keeps the JWT it got last, so a JWT must never overtake a newer one."""

    def _key_of(self, access: ClusterAccess) -> str | None:
        return user_key_of(self.authority, access)

    def evolve(self, stored: StoredEvent) -> None:
        """Fold one cluster event into the registered set and the revocations.

        An event changes the cluster it names and no other, and a user key is bound to its
        cluster's name (`user_key_of`), so the revocations are evolved over that one cluster:
        folding a fleet of N registrations derives N user keys, not N² (each derivation is an
        Ed25519 key pair)."""
        name = getattr(stored.event, "cluster", None)
        if not isinstance(name, str):
            return
        before = {name: self.clusters[name]} if name in self.clusters else {}
        after = evolve_access(before, stored.event)
        if after == before:
            return
        self.revocations = evolve_revocations(
            self.revocations,
            before,
            after,
            at=int(stored.event.occurred_at.timestamp()) + 1,
            key_of=self._key_of,
        )
        if name in after:
            self.clusters[name] = after[name]
        else:
            del self.clusters[name]
        self._unwritten = True

    def _project_key(self, project: str) -> str:
        """The public key of `project`'s account, made now (with no limits, until the project
        account service sets its quotas' ones) if a cluster of it is met first."""
        name = account_of_project(project)
        if name not in self.authority.accounts:
            self.authority.ensure_project_account(project, ProjectLimits())
        return self.authority.public_key(name)

    def documents(self) -> dict[str, AccountDocument]:
        """What every account the clusters touch must carry: FLEET, each project account with
        clusters, and each that had some when it was last pushed."""
        links = account_links(self.clusters.keys(), self._project_key)
        revocations = tuple(sorted(self.revocations.items()))
        names = {FLEET_ACCOUNT, *links, *(self._pushed or {})}
        return {
            name: AccountDocument(revocations, links.get(name, AccountLinks()))
            for name in sorted(names)
        }

    def account_jwt(self, name: str) -> str:
        """Account `name`'s JWT, signed now: its limits, the revocations still current and its
        clusters' links (every revoked key is listed in every account: harmless where the key
        never was, and a cluster's key is refused wherever it lived)."""
        links = account_links(self.clusters.keys(), self._project_key).get(name, AccountLinks())
        return self.authority.account_jwt(
            name,
            revocations=current_revocations(self.revocations, datetime.now(UTC)),
            exports=links.export_claims() or None,
            imports=links.import_claims() or None,
        )

    def check_room(self, cluster: str) -> None:
        """Refuse (`AccountTooLarge`, before anything is issued or written) a new cluster of a
        project whose links would make its account's or FLEET's JWT larger than the servers
        take; each project cluster adds about 1.1 KB to both."""
        account = account_of_project(project_of(cluster))
        if account == FLEET_ACCOUNT or cluster in self.clusters:
            return
        links = account_links([*self.clusters.keys(), cluster], self._project_key)
        revocations = current_revocations(self.revocations, datetime.now(UTC))
        for name in (FLEET_ACCOUNT, account):
            size = len(
                self.authority.account_jwt(
                    name,
                    revocations=revocations,
                    exports=links[name].export_claims(),
                    imports=links[name].import_claims(),
                    iat=1,
                )
            )
            if size > MAX_ACCOUNT_JWT_BYTES:
                linked = sum(
                    1 for c in self.clusters if account_of_project(project_of(c)) != FLEET_ACCOUNT
                )
                raise AccountTooLarge(
                    f"cluster {cluster} cannot be registered: NATS account {name} would reach "
                    f"{size} bytes, over the limit of {MAX_ACCOUNT_JWT_BYTES} bytes, with "
                    f"{linked} clusters outside the default project already linked; remove "
                    "clusters no longer in use (`fleetbus cluster rm`)"
                )

    def fleet_account_jwt(self) -> str:
        """The FLEET account's JWT for the revocations still current."""
        return self.account_jwt(FLEET_ACCOUNT)

    async def ensure_project_account(self, project: str, limits: ProjectLimits) -> str:
        """Create a project's NATS account (or change its limits) on every server; its public
        key. The account keeps its revocations and links (the default project's is FLEET)."""
        async with self.pushing:
            name = self.authority.ensure_project_account(project, limits)
            await self.publisher.push([self.account_jwt(name)])
            return self.authority.public_key(name)

    async def _push_changed(self) -> None:
        """Push every account whose revocations or links changed (all of them at start) and
        wait until every server holds them."""
        documents = self.documents()
        pushed = self._pushed or {}
        changed = [
            name
            for name, document in documents.items()
            if self._pushed is None or pushed.get(name) != document
        ]
        if changed:
            async with self.pushing:
                servers = await self.publisher.push([self.account_jwt(name) for name in changed])
                self._pushed = {**pushed, **{name: documents[name] for name in changed}}
            log.info(
                "hub access updated on %d NATS servers (%s): %d clusters, %d revoked keys",
                servers,
                ", ".join(changed),
                len(self.clusters),
                len(self.revocations),
            )

    async def apply(self, seq: int) -> None:
        """Push every account whose revocations or links changed (all of them at start) and
        wait until every server holds them, forget the revoked clusters' consumers, record
        `seq`."""
        if self._unwritten or self._pushed is None:
            # Only a change of the registered set costs a pass over it: the other cluster
            # events (health, capabilities, repairs) come by the thousand in a large fleet.
            await self._push_changed()
            revoked = revoked_clusters(self._effective, self.clusters)
            self._effective = dict(self.clusters)
            if self.consumer_gate is not None and revoked:
                await self.consumer_gate.forget(revoked)
            self.state.write(seq, self.clusters, len(self.revocations))
            self._unwritten = False
        self.applied_seq = seq
        async with self._applied:
            self._applied.notify_all()

    async def wait_applied(self, seq: int) -> None:
        """Wait until the event at `seq` is effective (bound it with `asyncio.timeout`)."""
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_seq >= seq)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Replay the cluster events, make them effective, then follow new ones."""
        last = 0
        self.clusters = {}
        self.revocations = {}
        async for stored in self.store.read(subject=CLUSTER_EVENTS, skip_undecodable=True):
            self.evolve(stored)
            last = stored.seq
        await self.apply(last)
        if ready is not None:
            ready.set()
        queue: asyncio.Queue[StoredEvent] = asyncio.Queue()

        async def follow() -> None:
            async for stored in self.store.follow(
                from_seq=last + 1, subject=CLUSTER_EVENTS, skip_undecodable=True
            ):
                await queue.put(stored)

        follower = asyncio.create_task(follow(), name="cluster-access-follow")
        getter: asyncio.Future[StoredEvent] | None = None
        try:
            while True:
                if follower.done():
                    follower.result()
                    return
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, follower}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    continue
                stored = getter.result()
                self.evolve(stored)
                # Coalesce a burst (a fleet registering at once) into one push.
                while not queue.empty():
                    stored = queue.get_nowait()
                    self.evolve(stored)
                await self.apply(stored.seq)
        finally:
            await cancel_and_wait([follower, *([getter] if getter is not None else [])])
