"""Per-cluster delivery on the hub, provisioned from the log: consumers on DESIRED, REPORTS sources.

For every registered cluster the hub owns what an edge needs, so an edge never creates it:
- a durable pull consumer `edge-<cluster>` on DESIRED filtered on `fleet.desired.<cluster>.>`
  (deliver last per subject, explicit ack): the only consumer on DESIRED an edge may pull;
- for a leaf cluster, a source of REPORTS: the cluster's outbox `REPORTS-<cluster>` in the
  edge's own JetStream domain, filtered on `fleet.report.<cluster>.>` so a report an edge files
  under another cluster's name is never copied. The hub writes the `Nats-Stream-Source` header
  of each copy: that is the origin. A cluster connected as a plain client needs no source: it
  publishes into REPORTS itself, on the only report subjects its user may publish on.

Each durable is created with one replica (`num_replicas: 1`) whatever the replicas of DESIRED.
On a NATS cluster a replicated consumer is a Raft group of its own, with its own elections and
heartbeats: at R3, 10,000 clusters would be 10,000 Raft groups on every node, the scale at which
JetStream clusters are reported to fail. A one-replica consumer on a replicated stream is plain
state on one node, reading that node's replica of DESIRED: the number of Raft groups stays the
number of streams, whatever the size of the fleet (measured in BENCHMARKS.md, P15). What a
durable holds can always be rebuilt: it delivers the last message per subject, so a durable
created again delivers the cluster's whole desired state, which the edge applies idempotently.
When its node is lost, `DurableRehoming` creates it again on a node that is up.

A source is a consumer the server keeps running (flow control, heartbeats), so the hub pays
per leaf cluster; client clusters cost the hub one durable each. Hubs that ran before clients
published directly may still hold hub-side outboxes (`REPORTS-<cluster>` streams capturing
`fleet.report.<cluster>.>`): they would overlap REPORTS' subjects, so they are removed first.

`ProvisioningService` folds `ClusterRegistered` / `ClusterLabelsChanged` / `ClusterDeregistered`
at start and follows them; the plan (which consumers, which sources) is computed by pure
functions from the set of clusters, so a restart converges to the same state.

Making a plan real at 10,000 clusters is 20,000 JetStream API requests. One at a time that is
20,000 round trips; all at once it overflows the server's JetStream API queue (requests are
dropped and time out). `run_bounded` keeps `API_CONCURRENCY` requests in flight: the server
stays busy and nothing is dropped.

`DurableRehoming` finds the durables whose node is down (the server lists them as missing)
and creates them again on the nodes that are up; which ones is decided by `durables_to_rehome`.
When that node comes back it may still hold its old copies (see `DurableRehoming`): once it
has been back for a few seconds, the durables moved off it are deleted and created once more,
and it drops them.

`SourceRevival` restarts the REPORTS sourcing of leaf clusters that are demonstrably connected
(they just sent an inventory digest) but whose source has stalled; which ones is decided by
`sources_to_revive`, a pure function of what was provisioned, seen and revived, and `now`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from events import edges, subjects
from events.catalog import ClusterDeregistered, ClusterLabelsChanged, ClusterRegistered, Event
from events.errors import AppendRefused, EventLogError
from events.store import EventStore
from events.streams import DESIRED_STREAM, NANOS, REPORTS_STREAM, reports_stream
from events.tasks import cancel_and_wait
from scheduler.durable_moves import MOVES_STREAM, DurableMoves

log = logging.getLogger(__name__)

CLUSTER_EVENTS = f"{subjects.EVENTS_PREFIX}.cluster.>"
ACK_WAIT_S = 10
"""A desired state delivered but not acknowledged comes again after this. An edge acknowledges
on receipt (and reports a slow data-key fetch in progress), so this only bounds how long a
message lost on its way, its edge's server going down as it was delivered, waits."""
CONSUMER_NOT_FOUND = 10014
STREAM_NOT_FOUND = 10059
DURABLE_REPLICAS = 1
"""Replicas of each cluster's durable on DESIRED, whatever the stream's own replicas."""
CONSUMER_OFFLINE = 10119
CONSUMER_EXISTS = 10148
OLD_PLACEMENT_CODES = (CONSUMER_OFFLINE, CONSUMER_EXISTS)
"""A create answered with one of these still found the durable's old placement."""
DELETE_ANSWER_S = 0.25
"""How long a durable's replacement waits for the answer to deleting the lost copy."""
REPLACE_ATTEMPTS = 8
LIST_CONCURRENCY = 8
"""Pages of DESIRED's durables asked for at once while looking for those of a lost node."""
API_CONCURRENCY = 48
"""JetStream API requests one plan keeps in flight; far below the server's API queue limit."""

Clusters = dict[str, str]
"""Registered cluster name -> how it connects (`events.edges.LEAF` or `CLIENT`)."""


def evolve_clusters(clusters: Mapping[str, str], event: Event) -> Clusters:
    updated = dict(clusters)
    match event:
        case ClusterRegistered():
            updated[event.cluster] = edges.connection_of(event.labels)
        case ClusterLabelsChanged() if event.cluster in updated:
            updated[event.cluster] = edges.connection_of(event.labels)
        case ClusterDeregistered():
            updated.pop(event.cluster, None)
    return updated


def durable_config(cluster: str) -> dict[str, Any]:
    return {
        "durable_name": edges.desired_durable(cluster),
        "description": f"desired state of cluster {cluster}",
        # One replica on a replicated stream: no Raft group per cluster (see the docstring).
        "num_replicas": DURABLE_REPLICAS,
        "filter_subject": subjects.desired_filter(cluster),
        "deliver_policy": "last_per_subject",
        "ack_policy": "explicit",
        "ack_wait": ACK_WAIT_S * NANOS,
        "max_deliver": -1,
        "max_ack_pending": 1000,
        "replay_policy": "instant",
    }


def report_source(cluster: str) -> dict[str, Any]:
    """REPORTS' source for a leaf cluster: its outbox, in its own domain, its subjects only."""
    return {
        "name": edges.outbox_stream(cluster),
        "filter_subject": subjects.report_filter(cluster),
        "external": {
            "api": f"$JS.{edges.edge_domain(cluster)}.API",
            "deliver": edges.reports_deliver_prefix(cluster),
        },
    }


def reports_config(clusters: Mapping[str, str], replicas: int = 1) -> dict[str, Any]:
    sources = [report_source(name) for name in sorted(clusters) if clusters[name] == edges.LEAF]
    return reports_stream(sources, replicas)


def leftover_outboxes(stream_names: Iterable[str]) -> list[str]:
    """Hub-side outbox streams (of earlier client clusters) among the hub's streams."""
    return sorted(name for name in stream_names if name.startswith(edges.OUTBOX_PREFIX))


async def run_bounded(
    calls: Iterable[Callable[[], Awaitable[None]]], *, limit: int = API_CONCURRENCY
) -> None:
    """Run every call with at most `limit` of them in flight.

    The first failure is raised as is (not wrapped) once the calls still in flight are
    cancelled; calls not started yet are not started."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    pending = iter(calls)

    async def worker() -> None:
        for call in pending:
            await call()

    workers = [asyncio.create_task(worker(), name="provisioning-call") for _ in range(limit)]
    try:
        await asyncio.gather(*workers)
    finally:
        await cancel_and_wait(workers)


class Provisioner:
    """The JetStream calls that make one plan real; each is idempotent."""

    def __init__(self, store: EventStore, replicas: int = 1) -> None:
        self.store = store
        self.replicas = replicas

    async def ensure_durable(self, cluster: str) -> None:
        config = durable_config(cluster)
        durable = config["durable_name"]
        await self.store.api_request(
            f"CONSUMER.CREATE.{DESIRED_STREAM}.{durable}.{config['filter_subject']}",
            {"stream_name": DESIRED_STREAM, "config": config, "action": ""},
        )

    async def reset_durable(self, cluster: str) -> None:
        """Start the cluster's durable over: it delivers the full desired state again."""
        await self.delete_durable(cluster)
        await self.ensure_durable(cluster)

    async def reset_durables(self, clusters: Iterable[str]) -> None:
        """`reset_durable` for many clusters, a bounded number at a time."""
        await run_bounded(partial(self.reset_durable, name) for name in clusters)

    async def replace_durable(self, cluster: str) -> None:
        """Create the cluster's durable again on a node that is up, its old node being lost.

        Deleting a consumer is decided by the meta layer (the meta leader records the removal
        and forgets the old placement at once), but the answer comes from the node that held
        it: a lost node never answers, and a delete that waits for it costs its whole retry
        budget (about 39 s for 207 durables). So the delete is sent once, its answer given
        `DELETE_ANSWER_S` (enough for the meta leader to take it before the create; it is not
        needed), and the durable created at once: the meta leader places it on a node that is
        up. The lost node drops its copy when it comes back and catches up with the meta
        layer. A create that still finds the old placement (the delete not taken yet) is
        refused and asked again."""
        durable = edges.desired_durable(cluster)
        try:
            await self.store.api_send(
                f"CONSUMER.DELETE.{DESIRED_STREAM}.{durable}", answer_within=DELETE_ANSWER_S
            )
        except AppendRefused as e:
            if f"code {CONSUMER_NOT_FOUND}" not in str(e):
                raise
        for attempt in range(1, REPLACE_ATTEMPTS + 1):
            try:
                await self.ensure_durable(cluster)
                return
            except AppendRefused as e:
                if attempt == REPLACE_ATTEMPTS or not any(
                    f"code {code}" in str(e) for code in OLD_PLACEMENT_CODES
                ):
                    raise
            await asyncio.sleep(DELETE_ANSWER_S * attempt)

    async def replace_durables(self, clusters: Iterable[str]) -> None:
        """`replace_durable` for many clusters, a bounded number at a time."""
        await run_bounded(partial(self.replace_durable, name) for name in clusters)

    async def delete_durable(self, cluster: str) -> None:
        await self._delete(f"CONSUMER.DELETE.{DESIRED_STREAM}.{edges.desired_durable(cluster)}")

    async def durable_leaders(self) -> dict[str, str]:
        """Every durable of DESIRED -> the node leading it; "" for those the server lists as
        missing (their node did not answer) or without a leader.

        The server lists 256 durables per request (sorted by name) and, for each page
        holding durables of a node that does not answer, waits 4 s for them: the pages after
        the first are asked for `LIST_CONCURRENCY` at a time, so a lost node costs those 4 s
        once per 8 pages, not once per page (4 s instead of 32 s at 2,000 clusters). Each
        page makes the server ask 256 consumers for their info, so not all at once."""
        leaders: dict[str, str] = {}
        first, listed = await self._durables_page(0, leaders)
        total = int(first.get("total", 0))
        if listed:
            await run_bounded(
                (
                    partial(self._add_durables_page, offset, leaders)
                    for offset in range(listed, total, listed)
                ),
                limit=LIST_CONCURRENCY,
            )
        return leaders

    async def _add_durables_page(self, offset: int, leaders: dict[str, str]) -> None:
        await self._durables_page(offset, leaders)

    async def _durables_page(self, offset: int, leaders: dict[str, str]) -> tuple[Any, int]:
        """Add one page of `CONSUMER.LIST` to `leaders`; the page and how many it listed."""
        page = await self.store.api_request(f"CONSUMER.LIST.{DESIRED_STREAM}", {"offset": offset})
        consumers = page.get("consumers") or []
        absent = {str(name) for name in page.get("missing") or []}
        for info in consumers:
            name = str(info.get("name", ""))
            leaders[name] = (
                "" if name in absent else str((info.get("cluster") or {}).get("leader", ""))
            )
        leaders.update(dict.fromkeys(absent, ""))
        # A durable the meta leader knows to be offline is listed twice: with its config
        # among the consumers and by name among the missing.
        return page, len({str(info.get("name", "")) for info in consumers} | absent)

    async def delete_leftover_outboxes(self) -> list[str]:
        """Remove hub-side outbox streams; the names of those removed."""
        names: list[str] = []
        offset = 0
        while True:
            page = await self.store.api_request(
                "STREAM.NAMES", {"subject": f"{subjects.REPORT_PREFIX}.>", "offset": offset}
            )
            batch = [str(name) for name in page.get("streams") or []]
            names += batch
            offset += len(batch)
            if not batch or offset >= int(page.get("total", 0)):
                break
        leftovers = leftover_outboxes(names)
        await run_bounded(partial(self._delete, f"STREAM.DELETE.{name}") for name in leftovers)
        return leftovers

    async def ensure_reports(self, clusters: Mapping[str, str]) -> None:
        await self.store.ensure_stream(reports_config(clusters, self.replicas))

    async def _delete(self, api: str) -> None:
        try:
            await self.store.api_request(api)
        except AppendRefused as e:
            if f"code {CONSUMER_NOT_FOUND}" in str(e) or f"code {STREAM_NOT_FOUND}" in str(e):
                return
            raise


def removed_clusters(provisioned: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """Clusters provisioned before that are no longer registered: their durables go."""
    return sorted(set(provisioned) - set(wanted))


def clusters_to_ensure(
    provisioned: Mapping[str, str], wanted: Mapping[str, str]
) -> list[tuple[str, str]]:
    """Registered clusters not yet provisioned for the way they connect now."""
    return [
        (name, connection)
        for name, connection in sorted(wanted.items())
        if provisioned.get(name) != connection
    ]


def unavailable_peers(info: Mapping[str, Any], *, silent_ns: int) -> frozenset[str]:
    """Nodes holding a replica of the stream (its info says) that are offline or that its
    leader has not heard from for `silent_ns` (a live follower is heard from several times a
    second; a killed node still counts as current for about ten seconds), or ever: a leader
    elected after its predecessor was killed lists that node as not current, heard from 0 ns
    ago, for as long as it stays down. (A live follower shows that for a moment after an
    election too; it costs one listing of the durables that finds none to move.)"""
    replicas = (info.get("cluster") or {}).get("replicas") or []
    return frozenset(
        str(peer.get("name", ""))
        for peer in replicas
        if peer.get("offline")
        or int(peer.get("active", 0)) > silent_ns
        or (not peer.get("current") and not int(peer.get("active", 0)))
    )


def durables_to_rehome(
    leaders: Mapping[str, str], down: Iterable[str], provisioned: Mapping[str, str]
) -> list[str]:
    """Registered clusters whose durable has no leader that answers: listed as missing or
    without a leader, or led by a node that is `down`."""
    lost = set(down)
    by_durable = {edges.desired_durable(name): name for name in provisioned}
    return sorted(
        by_durable[durable]
        for durable, leader in leaders.items()
        if durable in by_durable and (not leader or leader in lost)
    )


def nodes_back(
    info: Mapping[str, Any], nodes: Iterable[str], down: Iterable[str]
) -> frozenset[str]:
    """Of `nodes`, those the stream's info shows up again: its leader, or a replica that is
    current and not `down`."""
    cluster = info.get("cluster") or {}
    current = {str(cluster.get("leader") or "")} | {
        str(peer.get("name", "")) for peer in cluster.get("replicas") or [] if peer.get("current")
    }
    return frozenset(set(nodes) & current - set(down))


def stalled_sources(info: Mapping[str, Any], *, stale_ns: int) -> list[str]:
    """Clusters whose REPORTS source has never connected or has been silent for `stale_ns`.

    A healthy source hears from its edge at least every second (data or heartbeat)."""
    stalled = []
    for source in info.get("sources") or []:
        name = str(source.get("name", ""))
        if not name.startswith(edges.OUTBOX_PREFIX):
            continue
        active = int(source.get("active", -1))
        if active < 0 or active > stale_ns:
            stalled.append(name[len(edges.OUTBOX_PREFIX) :])
    return stalled


class ProvisioningService:
    """Keeps consumers and REPORTS sources equal to the registered clusters."""

    def __init__(self, store: EventStore, *, replicas: int = 1) -> None:
        self.store = store
        self.provisioner = Provisioner(store, replicas)
        self.clusters: Clusters = {}
        self.provisioned: Clusters = {}
        self.applied_seq = 0
        self.ready = asyncio.Event()
        self._changed = asyncio.Condition()

    async def converge(self, seq: int) -> None:
        """Bring JetStream to the plan for `self.clusters`, then record `seq` as applied."""
        wanted = dict(self.clusters)
        provisioner = self.provisioner
        await run_bounded(
            partial(provisioner.delete_durable, name)
            for name in removed_clusters(self.provisioned, wanted)
        )
        await run_bounded(
            partial(provisioner.ensure_durable, name)
            for name, _ in clusters_to_ensure(self.provisioned, wanted)
        )
        if not self.ready.is_set():
            removed = await provisioner.delete_leftover_outboxes()
            if removed:
                log.info("removed %d hub-side outbox streams of client clusters", len(removed))
        await provisioner.ensure_reports(wanted)
        self.provisioned = wanted
        self.applied_seq = seq
        async with self._changed:
            self._changed.notify_all()

    async def revive_sources(self, reachable: set[str], *, stale_s: float = 3.0) -> list[str]:
        """Restart the REPORTS sources of reachable clusters whose sourcing has stalled.

        nats-server retries a source that could not reach its edge with a backoff growing to
        minutes; an edge that is demonstrably back (it just sent an inventory digest) should
        not wait that long. Removing and re-adding the source makes the server set it up at
        once, resuming after the last message it copied (and `Nats-Msg-Id` de-duplicates).
        """
        if not self.ready.is_set():
            return []
        info = await self.store.stream_info(REPORTS_STREAM)
        stalled = [
            name
            for name in stalled_sources(info, stale_ns=int(stale_s * NANOS))
            if name in reachable and name in self.provisioned
        ]
        if not stalled:
            return []
        without = {n: c for n, c in self.provisioned.items() if n not in stalled}
        await self.provisioner.ensure_reports(without)
        await self.provisioner.ensure_reports(self.provisioned)
        log.info("restarted REPORTS sourcing of %s", ", ".join(stalled))
        return stalled

    async def rehome_durables(
        self,
        down: Iterable[str],
        *,
        before_moving: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> list[str]:
        """Create again the durables of registered clusters that no node up leads (listed as
        missing, or led by a node `down`): a durable created again is placed on a node that
        is up and delivers the cluster's whole desired state. The clusters whose durable was
        created again; `before_moving` is told them first (when there are any)."""
        if not self.ready.is_set():
            return []
        leaders = await self.provisioner.durable_leaders()
        clusters = durables_to_rehome(leaders, down, self.provisioned)
        if clusters and before_moving is not None:
            await before_moving(clusters)
        await self.provisioner.replace_durables(clusters)
        return clusters

    async def reset_moved_durables(self, clusters: Iterable[str]) -> list[str]:
        """Delete and create again the durables of those `clusters` still registered, so that
        no node keeps a copy of one (see `DurableRehoming`); the clusters reset."""
        registered = sorted(name for name in set(clusters) if name in self.provisioned)
        await self.provisioner.reset_durables(registered)
        return registered

    async def wait_applied(self, seq: int) -> None:
        """Wait until the event at `seq` is provisioned (bound it with `asyncio.timeout`)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.applied_seq >= seq)

    async def run(self) -> None:
        """Replay the cluster events, converge, then follow; safe to call again after an error."""
        last = 0
        self.clusters = {}
        async for stored in self.store.read(subject=CLUSTER_EVENTS, skip_undecodable=True):
            self.clusters = evolve_clusters(self.clusters, stored.event)
            last = stored.seq
        # What an earlier run provisioned is not known: ensure everything once.
        await self.converge(last)
        self.ready.set()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        async def follow() -> None:
            async for stored in self.store.follow(
                from_seq=last + 1, subject=CLUSTER_EVENTS, skip_undecodable=True
            ):
                await queue.put((stored.seq, stored.event))

        follower = asyncio.create_task(follow(), name="provisioning-follow")
        getter: asyncio.Future[tuple[int, Event]] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, follower}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    follower.result()
                    return
                seq, event = getter.result()
                before = dict(self.clusters)
                self.clusters = evolve_clusters(self.clusters, event)
                while not queue.empty():
                    seq, event = queue.get_nowait()
                    self.clusters = evolve_clusters(self.clusters, event)
                if self.clusters != before:
                    await self.converge(seq)
                else:
                    self.applied_seq = seq
        finally:
            await cancel_and_wait([follower, *([getter] if getter is not None else [])])


# --- durables on a lost node ---------------------------------------------------------------------


@dataclass
class DurableRehoming:
    """Creates again, on nodes that are up, the one-replica durables of a node that is down.

    A check reads DESIRED's info (one request); only when a node holding a replica is down
    (offline or silent) does it list the durables (a paged request per 256 durables) to find
    those led by no node that is up. A listing that found none is repeated when the set of
    such nodes changes, or after `relist_s`.

    A durable is created again under the same name, so the node it was moved off still has
    its old copy on disk, and nats-server 2.15 does not always drop it when it comes back: it
    loads a stream's consumers from disk while its meta layer may already be applying
    assignments, and its orphan check only looks for names no assignment has. Measured
    under load on the 3-node test cluster: a node restarted 13 s after it was killed kept
    the copies of the 2 durables moved last, and announcing their assignment again (an
    update with the same config) only made it log itself as their leader. A deletion,
    though, removes a copy of that name on every node (one older than the deleted durable
    too). So the durables moved off a node are remembered, and once that node has been back
    (current on DESIRED) for `settle_s`, its copies loaded by then, they are deleted and
    created once more: each delivers its cluster's whole desired state again, which the edge
    applies idempotently. What is remembered is also kept in JetStream (`moves`,
    `scheduler.durable_moves`): written before the durables are moved, removed once they are
    reset, read back at the first check, so a hub restarted while a node is down still resets
    the durables an earlier hub moved off it once it is back."""

    provisioning: ProvisioningService
    interval: float = 1.0
    silent_s: float = 3.0
    """A replica of DESIRED not heard from this long counts as down."""
    relist_s: float = 30.0
    """While a node stays down, the durables are listed again this often even when the last
    listing found none to move (one taken during a leader election may not show them yet)."""
    settle_s: float = 5.0
    """A node back this long has loaded its old copies: the durables moved off it are reset."""
    settled_for: frozenset[str] = frozenset()
    """The nodes down when a listing last found no durable to move."""
    settled_at: float = 0.0
    moved_off: dict[str, set[str]] = field(default_factory=dict)
    """Node -> the clusters whose durables were moved while it was down."""
    back_since: dict[str, float] = field(default_factory=dict)
    """Node with durables moved off it -> when it was first seen back."""
    clock: Callable[[], float] = time.monotonic
    moves: DurableMoves | None = None
    """Where `moved_off` is kept beside this process's memory (None: in memory only)."""
    restored: bool = False
    """Whether what an earlier hub moved has been read back from `moves`."""

    async def restore(self) -> None:
        """Once: create the stream `moves` keeps its records in, and take back what an
        earlier hub moved off nodes and did not reset yet."""
        if self.moves is None or self.restored:
            return
        try:
            await self.moves.ensure()
        except EventLogError as e:
            log.warning(
                "cannot create stream %s yet (%s): durables moved off a node are remembered "
                "by this process only until it can",
                MOVES_STREAM,
                e,
            )
        loaded = await self.moves.load()
        for node, clusters in loaded.items():
            self.moved_off.setdefault(node, set()).update(clusters)
        self.restored = True
        if loaded:
            log.warning(
                "durables moved off %s by an earlier hub are not reset yet: they will be once "
                "the node is back",
                ", ".join(f"{node} ({len(clusters)})" for node, clusters in sorted(loaded.items())),
            )

    async def remember(self, down: frozenset[str], clusters: Iterable[str]) -> None:
        """Add `clusters` to the durables moved off each node `down`, in memory and in
        `moves` (a record that cannot be written is logged: moving the durables goes first)."""
        for node in down:
            self.moved_off.setdefault(node, set()).update(clusters)
            self.back_since.pop(node, None)
        if self.moves is None:
            return
        for node in sorted(down):
            try:
                await self.moves.record(node, self.moved_off[node])
            except EventLogError as e:
                log.warning(
                    "the durables moved off %s are remembered by this process only: %s", node, e
                )

    async def check(self) -> list[str]:
        """One check; the clusters whose durable was created again."""
        if not self.provisioning.ready.is_set():
            return []
        await self.restore()
        info = await self.provisioning.store.stream_info(DESIRED_STREAM)
        down = unavailable_peers(info, silent_ns=int(self.silent_s * NANOS))
        await self.reclaim_from_returned(info, down)
        if not down:
            self.settled_for = down
            return []
        if down == self.settled_for and self.clock() - self.settled_at < self.relist_s:
            return []
        rehomed = await self.provisioning.rehome_durables(
            down, before_moving=partial(self.remember, down)
        )
        if rehomed:
            log.warning(
                "%d durables on DESIRED were on a node that is down (%s); created again on "
                "the nodes that are up",
                len(rehomed),
                ", ".join(sorted(down)),
            )
        else:
            self.settled_for = down
            self.settled_at = self.clock()
        return rehomed

    async def reclaim_from_returned(self, info: Mapping[str, Any], down: frozenset[str]) -> None:
        """Reset the durables moved off each node back for `settle_s` (see the class
        docstring), so that it drops the copies it still holds."""
        now = self.clock()
        back = nodes_back(info, self.moved_off, down)
        for node in list(self.back_since):
            if node not in back:
                del self.back_since[node]
        for node in sorted(back):
            since = self.back_since.setdefault(node, now)
            if now - since < self.settle_s:
                continue
            reset = await self.provisioning.reset_moved_durables(self.moved_off[node])
            if self.moves is not None:
                await self.moves.forget(node)
            del self.moved_off[node], self.back_since[node]
            if reset:
                log.warning(
                    "%s is back: deleted and created again the %d durables moved off it, so "
                    "that it keeps no copy of them",
                    node,
                    len(reset),
                )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except EventLogError as e:
                # A leader election in progress: the next check asks again.
                log.info("checking the durables on DESIRED failed: %s", e)


# --- source revival -------------------------------------------------------------------------------

REACHABLE_WITHIN = timedelta(seconds=90)
"""A cluster that sent an inventory digest this recently counts as connected."""
REVIVE_COOLDOWN = timedelta(seconds=10)
REVIVE_PAUSE_PER_SOURCE = 0.001
"""Seconds added to the pause between source-revival checks per REPORTS source."""
NEVER = datetime.min.replace(tzinfo=UTC)


def leaf_sourced(provisioned: Mapping[str, str]) -> set[str]:
    """Clusters REPORTS sources: only leaf clusters; clients publish into REPORTS themselves."""
    return {name for name, connection in provisioned.items() if connection == edges.LEAF}


def sources_to_revive(
    sourced: Iterable[str],
    last_seen: Mapping[str, datetime],
    revived: Mapping[str, datetime],
    now: datetime,
) -> set[str]:
    """Sourced clusters heard from within `REACHABLE_WITHIN` and not revived within
    `REVIVE_COOLDOWN`: the ones whose stalled source is worth restarting now."""
    return {
        name
        for name in sourced
        if (seen := last_seen.get(name)) is not None
        and now - seen < REACHABLE_WITHIN
        and now - revived.get(name, NEVER) > REVIVE_COOLDOWN
    }


@dataclass
class SourceRevival:
    """Restarts stalled REPORTS sourcing of clusters that are demonstrably connected."""

    provisioning: ProvisioningService
    last_seen: Callable[[], Mapping[str, datetime]]
    """When each cluster last sent an inventory digest (the anti-entropy service knows)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    interval: float = 2.0
    """Pause between checks, plus `REVIVE_PAUSE_PER_SOURCE` per source: each check reads
    REPORTS' info, which nats-server builds source by source (at 10,000 sources a check every
    2 s costs the server a tenth of a core)."""
    revived: dict[str, datetime] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            sourced = leaf_sourced(self.provisioning.provisioned)
            await asyncio.sleep(self.interval + REVIVE_PAUSE_PER_SOURCE * len(sourced))
            now = self.clock()
            reachable = sources_to_revive(sourced, self.last_seen(), self.revived, now)
            if reachable:
                for name in await self.provisioning.revive_sources(reachable):
                    self.revived[name] = now
