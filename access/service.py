"""Keeps the hub's nats-server users and pinned certificates equal to the registered set.

The set of clusters is never stored anywhere but the log: `ClusterAccessService` folds the
`fleet.evt.cluster.>` events at start (`access.permissions.evolve_access`), follows them,
rewrites the server config and reloads it, drops the leaf connections of revoked certificates
(`access.leafnodes`) and deletes the consumers their mirrors had (`access.consumer_gate`), and
records the last event it has made effective, which is what the
API's cluster registration and deregistration wait for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from access.consumer_gate import ConsumerGate
from access.leafnodes import (
    kick_leafs,
    leaf_connections,
    leafs_answering_as_named,
    reload_and_wait,
)
from access.permissions import (
    FLEET_ACCOUNT,
    ClusterAccess,
    ConfigText,
    LeafListener,
    cluster_users,
    evolve_access,
    revoked_clusters,
    stale_leafs,
)
from access.ports import HubFiles, HubServer
from access.private_files import write_private
from events import edges, subjects
from events.catalog import Event
from events.store import EventStore
from events.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CLUSTER_EVENTS = f"{subjects.EVENTS_PREFIX}.cluster.>"


@dataclass
class AccessState:
    """The last cluster event the hub's nats-server config reflects."""

    path: Path

    def write(self, applied_seq: int, clusters: Mapping[str, ClusterAccess]) -> None:
        admitted = {name: access.fingerprint for name, access in sorted(clusters.items())}
        write_private(self.path, orjson.dumps({"applied_seq": applied_seq, "clusters": admitted}))


def access_state(data: HubFiles) -> AccessState:
    return AccessState(data.root / "access.json")


class ClusterAccessService:
    """Keeps the hub's nats-server users and pinned certificates equal to the registered set."""

    def __init__(
        self,
        store: EventStore,
        *,
        server: HubServer,
        data: HubFiles,
        listener: LeafListener | None,
        config_text: ConfigText,
        consumer_gate: ConsumerGate | None = None,
    ) -> None:
        self.store = store
        self.consumer_gate = consumer_gate
        self.server = server
        self.data = data
        self.listener = listener
        self.config_text = config_text
        self.clusters: dict[str, ClusterAccess] = {}
        self.state = access_state(data)
        self.applied_seq = 0
        self._applied = asyncio.Condition()
        self._rendered = self._current_config()
        self._effective: dict[str, ClusterAccess] = {}

    def _current_config(self) -> str:
        try:
            return self.data.nats_conf.read_text()
        except FileNotFoundError:
            return ""

    def render(self) -> str:
        clusters = list(self.clusters.values())
        leaf_block = self.listener.render() if self.listener else ""
        users = cluster_users(clusters, self.data.secrets()["hub_password"])
        return self.config_text(leaf_block, users)

    async def apply(self, seq: int) -> None:
        """Write the config for the current set, reload if it changed, drop the leaf
        connections of revoked certificates, record `seq`."""
        text = self.render()
        if text != self._rendered:
            write_private(self.data.nats_conf, text.encode())
            await asyncio.to_thread(reload_and_wait, self.server)
            self._rendered = text
            log.info("hub access updated: %d clusters", len(self.clusters))
        revoked = revoked_clusters(self._effective, self.clusters)
        self._effective = dict(self.clusters)
        await self.drop_stale_leafs(revoked)
        if self.consumer_gate is not None and revoked:
            await self.consumer_gate.forget(revoked)
        self.applied_seq = seq
        self.state.write(seq, self.clusters)
        async with self._applied:
            self._applied.notify_all()

    async def drop_stale_leafs(self, revoked: set[str]) -> None:
        """Close leaf connections that no current certificate would admit.

        nats-server re-checks plain clients against the users on reload, but not accepted leaf
        connections, so the hub kicks them itself (system account `KICK` request). A leaf is
        known by the server name its edge gives itself (`edge-<cluster>`); besides the revoked
        clusters' leafs, any leaf whose name belongs to no registered cluster, or that shares
        its name with another leaf, is dropped: honest edges reconnect within a second, a
        revoked certificate cannot.

        The name is the edge's own claim. So on a revocation every other leaf must also prove
        it: a request on `$JS.edge-<cluster>.API` can only reach the leaf whose certificate is
        that cluster's (the hub lets no other leaf subscribe to it). A revoked edge that
        called itself by another cluster's name gets no such request and is dropped too.
        """
        leafs = await asyncio.to_thread(leaf_connections, self.server.monitor_port)
        allowed = {
            edges.edge_domain(a.name) for a in self.clusters.values() if a.connection == edges.LEAF
        }
        targets = stale_leafs(leafs, allowed, {edges.edge_domain(name) for name in revoked})
        if revoked:
            dropping = {cid for cid, _ in targets}
            rest = [
                (int(str(leaf["id"])), str(leaf.get("name")))
                for leaf in leafs
                if leaf.get("account") == FLEET_ACCOUNT and int(str(leaf["id"])) not in dropping
            ]
            proven = await leafs_answering_as_named(
                self.server, self.data.secrets()["hub_password"], [name for _, name in rest]
            )
            targets += [leaf for leaf, ok in zip(rest, proven, strict=True) if not ok]
        if targets:
            await kick_leafs(self.server, self.data.secrets()["sys_password"], targets)

    async def wait_applied(self, seq: int) -> None:
        """Wait until the event at `seq` is effective (bound it with `asyncio.timeout`)."""
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_seq >= seq)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Replay the cluster events, make them effective, then follow new ones."""
        last = 0
        self.clusters = {}
        async for stored in self.store.read(subject=CLUSTER_EVENTS, skip_undecodable=True):
            self.clusters = evolve_access(self.clusters, stored.event)
            last = stored.seq
        await self.apply(last)
        if ready is not None:
            ready.set()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        async def follow() -> None:
            async for stored in self.store.follow(
                from_seq=last + 1, subject=CLUSTER_EVENTS, skip_undecodable=True
            ):
                await queue.put((stored.seq, stored.event))

        follower = asyncio.create_task(follow(), name="cluster-access-follow")
        getter: asyncio.Future[tuple[int, Event]] | None = None
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
                seq, event = getter.result()
                self.clusters = evolve_access(self.clusters, event)
                # Coalesce a burst (a fleet registering at once) into one reload.
                while not queue.empty():
                    seq, event = queue.get_nowait()
                    self.clusters = evolve_access(self.clusters, event)
                await self.apply(seq)
        finally:
            await cancel_and_wait([follower, *([getter] if getter is not None else [])])
