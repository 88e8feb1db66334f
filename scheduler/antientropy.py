"""Anti-entropy: compare each cluster's inventory digest with DESIRED, re-deliver what differs.

Edges send `fleet.inventory.<cluster>` digests (core NATS, see `events.inventory`). The hub
takes them in batches of those already waiting (up to `CLUSTERS_PER_READ`) and reads the
slices of DESIRED of all their clusters at once: one batched direct get (last message per
subject) per group of clusters whose last known slices fit in one reply of the server (1,024
messages; a group that matches more all the same is read in halves). It then compares each
digest with its cluster's slice, in the order they arrived; in the common case they are
equal and nothing else happens.
When they differ, `decide_repair` names the tasksets the edge lacks or holds stale, leaving out
messages written in the last `settle` seconds (still on their way to the edge); clusters
repaired within `cooldown` are skipped, and only what two consecutive digests lacked is
repaired (a freshly started edge may report before its mirror caught up). Each is re-delivered
by writing the same ClusterTask again on its subject, conditional on the sequence just read (a
concurrent scheduler write wins and delivers anyway), which reaches the edge's mirror or
durable consumer as a new message; then `AntiEntropyRepaired` is appended to the log.

The digest's origin is its subject: the hub only lets cluster C publish on
`fleet.inventory.C`, and a digest whose body names another cluster is dropped.

`DesiredReader` reads and writes through named operations of `events.port.JetStreamPort`
(batched direct gets, conditional re-writes, the inventory subscription); everything else here
is pure or plain sequencing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from events import subjects
from events.catalog import AntiEntropyRepaired, ClusterCapabilitiesReported
from events.errors import (
    ConcurrencyConflict,
    EventLogError,
    EventLogUnavailable,
    TooManyResults,
)
from events.ids import new_event_id
from events.inventory import (
    EdgeStatus,
    InventoryDigest,
    TasksetState,
    decode_inventory,
    desired_state_digest,
)
from events.port import MAX_DIRECT_RESULTS, JetStreamPort, Reply
from events.store import EventStore
from events.streams import DESIRED_STREAM
from events.subjects import EVENTS_PREFIX
from taskset.capabilities import ClusterCapabilities
from taskset.codec import CorruptPayload, decode_cluster_task

log = logging.getLogger(__name__)

INVENTORY_WILDCARD = f"{subjects.INVENTORY_PREFIX}.*"
MAX_TASKSETS_PER_CLUSTER = 10_000
CLUSTERS_PER_READ = 256
"""Clusters whose slices of DESIRED one direct get reads (and digests taken at once)."""


@dataclass(frozen=True)
class DesiredEntry:
    """The last DESIRED message of one (cluster, taskset) subject."""

    subject: str
    seq: int
    stored_at: datetime
    state: TasksetState
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)


def hub_digest(entries: Mapping[str, DesiredEntry]) -> str:
    return desired_state_digest({name: entry.state for name, entry in entries.items()})


def decide_repair(
    entries: Mapping[str, DesiredEntry],
    inventory: InventoryDigest,
    now: datetime,
    *,
    settle: timedelta,
) -> list[str]:
    """Tasksets whose desired state the edge lacks or holds stale, settled long enough."""
    stale = []
    for name, entry in sorted(entries.items()):
        held = inventory.desired.get(name)
        if held == entry.state:
            continue
        if held is None and entry.state.removed:
            continue  # the edge forgot a removal it already carried out: nothing to deliver
        if now - entry.stored_at < settle:
            continue
        stale.append(name)
    return stale


def confirmed(previous: Mapping[str, int] | None, current: Mapping[str, int]) -> list[str]:
    """Tasksets two consecutive digests of a cluster lacked, at the same DESIRED message.

    One digest is not enough: an edge that has just (re)started may send its first digest
    before its mirror caught up. A second one, an inventory interval later, is.
    """
    if not previous:
        return []
    return sorted(name for name, seq in current.items() if previous.get(name) == seq)


def cooling_down(last_repair: datetime | None, now: datetime, cooldown: timedelta) -> bool:
    return last_repair is not None and now - last_repair < cooldown


def taskset_of(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


def cluster_of(subject: str) -> str:
    """The cluster of a `fleet.desired.<cluster>.<taskset>` subject."""
    return subject.removeprefix(f"{subjects.DESIRED_PREFIX}.").split(".", 1)[0]


def _entry_of(reply: Reply) -> DesiredEntry | None:
    headers = reply.headers
    subject = headers.get("Nats-Subject", "")
    state = _state_of(headers, reply.data)
    if state is None:
        log.warning("undecodable ClusterTask on %s", subject)
        return None
    return DesiredEntry(
        subject=subject,
        seq=int(headers.get("Nats-Sequence", "0")),
        stored_at=datetime.fromisoformat(headers.get("Nats-Time-Stamp", "").replace("Z", "+00:00")),
        state=state,
        payload=reply.data,
        headers={k: v for k, v in headers.items() if k.startswith("Fleetbus-")},
    )


def _state_of(headers: Mapping[str, str], payload: bytes) -> TasksetState | None:
    generation = headers.get("Fleetbus-Generation")
    digest = headers.get("Fleetbus-Digest")
    if generation is not None and digest is not None:
        return TasksetState(
            generation=int(generation),
            digest=digest,
            removed=headers.get("Fleetbus-Removed") == "true",
        )
    try:
        task = decode_cluster_task(payload)
    except CorruptPayload:
        return None
    return TasksetState(generation=task.generation, digest=task.digest, removed=task.removed)


class DesiredReader:
    """Reads a cluster's slice of DESIRED and re-writes single subjects, through the named
    operations of `events.port.JetStreamPort`."""

    def __init__(self, store: EventStore, *, timeout: float = 5.0) -> None:
        self.store = store
        self.port = JetStreamPort(store.api, timeout=timeout)
        self.timeout = timeout
        self._sizes: dict[str, int] = {}
        """Tasksets each cluster had at its last read (to size the next reads' groups)."""

    async def cluster_entries(self, cluster: str) -> dict[str, DesiredEntry]:
        entries: dict[str, DesiredEntry] = {}
        found = await self.port.last_per_subject(
            DESIRED_STREAM, subjects.desired_filter(cluster), MAX_TASKSETS_PER_CLUSTER
        )
        for reply in found:
            entry = _entry_of(reply)
            if entry is not None:
                entries[taskset_of(entry.subject)] = entry
        return entries

    async def entries_of(
        self, clusters: Sequence[str], *, per_read: int = CLUSTERS_PER_READ
    ) -> dict[str, dict[str, DesiredEntry]]:
        """The slices of DESIRED of `clusters`: one batched direct get per group of at most
        `per_read` of them whose last known sizes add up to what the server answers at once
        (a group that matches more all the same is read in halves; one cluster alone as
        `cluster_entries` reads it). A cluster whose slice alone is more than the server
        answers at once is left out (logged)."""
        found: dict[str, dict[str, DesiredEntry]] = {cluster: {} for cluster in clusters}
        for group in self._groups(list(found), max(1, per_read)):
            await self._read_group(group, found)
        for cluster, entries in found.items():
            self._sizes[cluster] = len(entries)
        return found

    def _groups(self, clusters: Sequence[str], per_read: int) -> Iterator[list[str]]:
        group: list[str] = []
        total = 0
        for cluster in clusters:
            size = max(1, self._sizes.get(cluster, 1))
            if group and (len(group) >= per_read or total + size > MAX_DIRECT_RESULTS):
                yield group
                group, total = [], 0
            group.append(cluster)
            total += size
        if group:
            yield group

    async def _read_group(
        self, group: Sequence[str], found: dict[str, dict[str, DesiredEntry]]
    ) -> None:
        if len(group) == 1:
            cluster = group[0]
            try:
                found[cluster] = await self.cluster_entries(cluster)
            except TooManyResults as e:  # this cluster only: the others are compared
                log.warning("anti-entropy cannot read the desired state of %s: %s", cluster, e)
                found.pop(cluster, None)
            return
        try:
            replies = await self.port.last_per_subject(
                DESIRED_STREAM,
                [subjects.desired_filter(cluster) for cluster in group],
                MAX_DIRECT_RESULTS,
            )
        except TooManyResults:
            half = len(group) // 2
            await self._read_group(group[:half], found)
            await self._read_group(group[half:], found)
            return
        for reply in replies:
            entry = _entry_of(reply)
            if entry is None:
                continue
            slice_of = found.get(cluster_of(entry.subject))
            if slice_of is not None:
                slice_of[taskset_of(entry.subject)] = entry

    async def redeliver(self, entry: DesiredEntry) -> None:
        """Write `entry` again on its subject, unless something newer was written meanwhile."""
        headers = {
            **entry.headers,
            "Nats-Msg-Id": f"repair.{entry.subject}.{entry.seq}",
            "Nats-Expected-Last-Subject-Sequence": str(entry.seq),
        }
        reply = await self.port.request_once(entry.subject, entry.payload, headers)
        answer = reply.json()
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            if int(error.get("err_code", 0)) == 10071:
                raise ConcurrencyConflict(entry.subject, entry.seq, str(error.get("description")))
            raise EventLogUnavailable(f"re-delivery on {entry.subject}: {error}")

    def inventories(self, most: int = CLUSTERS_PER_READ) -> AsyncIterator[list[tuple[str, bytes]]]:
        """(subject, payload) of every inventory digest, forever, in batches of those already
        waiting (at most `most`)."""
        return self.port.message_batches(INVENTORY_WILDCARD, backlog=10_000, most=most)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AntiEntropyService:
    store: EventStore
    settle: timedelta = timedelta(seconds=10)
    cooldown: timedelta = timedelta(seconds=30)
    clock: Callable[[], datetime] = utc_now
    last_seen: dict[str, datetime] = field(default_factory=dict)
    """When each cluster last sent an inventory digest (liveness)."""
    edge_status: dict[str, EdgeStatus] = field(default_factory=dict)
    """What each cluster's connector said of itself in its last digest (version, readiness)."""
    last_repair: dict[str, datetime] = field(default_factory=dict)
    repairs: int = 0
    _suspects: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per cluster, what its last digest lacked: (taskset -> DESIRED sequence)."""
    capability_digests: dict[str, str] | None = None
    """Per cluster, the digest of the capabilities last recorded (read from the log once)."""
    per_read: int = CLUSTERS_PER_READ
    """Digests taken at once, and clusters whose DESIRED one direct get reads."""
    reads: int = 0
    """Batches of digests compared (each one read of DESIRED for all their clusters)."""
    compared: int = 0
    """Digests compared with DESIRED (not counting those dropped or cooling down)."""

    def __post_init__(self) -> None:
        self.reader = DesiredReader(self.store)

    async def run(self) -> None:
        async for batch in self.reader.inventories(self.per_read):
            try:
                await self.check_many(batch)
            except EventLogError as e:
                log.warning("anti-entropy check of %d digest(s) skipped: %s", len(batch), e)

    async def record_capabilities(
        self, cluster: str, capabilities: ClusterCapabilities, now: datetime
    ) -> ClusterCapabilitiesReported | None:
        """Log a cluster's capabilities when they differ from what the log holds for it."""
        if self.capability_digests is None:
            known: dict[str, str] = {}
            async for stored in self.store.read(subject=f"{EVENTS_PREFIX}.cluster.>"):
                if isinstance(stored.event, ClusterCapabilitiesReported):
                    known[stored.event.cluster] = stored.event.digest
            self.capability_digests = known
        digest = capabilities.digest
        if self.capability_digests.get(cluster) == digest:
            return None
        event = ClusterCapabilitiesReported(
            id=new_event_id(),
            occurred_at=now,
            actor="hub:anti-entropy",
            cluster=cluster,
            capabilities=capabilities,
            digest=digest,
        )
        await self.store.append([event])
        self.capability_digests[cluster] = digest
        log.info("cluster %s reports Kubernetes %s", cluster, capabilities.kube_version)
        return event

    async def check(self, subject: str, payload: bytes) -> AntiEntropyRepaired | None:
        """Compare one inventory digest with DESIRED; repair and record what differs."""
        repaired = await self.check_many([(subject, payload)])
        return repaired[0] if repaired else None

    async def check_many(self, digests: Sequence[tuple[str, bytes]]) -> list[AntiEntropyRepaired]:
        """Compare inventory digests (subject, payload), in order, with DESIRED, read once for
        all their clusters; repair and record what differs. A cluster whose repair fails is
        logged and skipped; only a failed read of DESIRED fails the whole batch."""
        accepted: list[tuple[str, InventoryDigest]] = []
        for subject, payload in digests:
            cluster = subject.rsplit(".", 1)[-1]
            try:
                inventory = decode_inventory(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                log.warning("malformed inventory digest on %s: %s", subject, e)
                continue
            if inventory.cluster != cluster:
                log.warning(
                    "inventory digest on %s names cluster %r; dropped", subject, inventory.cluster
                )
                continue
            now = self.clock()
            self.last_seen[cluster] = now
            if inventory.edge is not None:
                self.edge_status[cluster] = inventory.edge
            if inventory.capabilities is not None:
                try:
                    await self.record_capabilities(cluster, inventory.capabilities, now)
                except EventLogError as e:
                    log.warning("anti-entropy check on %s skipped: %s", subject, e)
                    continue
            if cooling_down(self.last_repair.get(cluster), now, self.cooldown):
                continue
            accepted.append((cluster, inventory))
        if not accepted:
            return []
        self.reads += 1
        slices = await self.reader.entries_of(
            [cluster for cluster, _ in accepted], per_read=self.per_read
        )
        repaired = []
        for cluster, inventory in accepted:
            entries = slices.get(cluster)
            if entries is None:
                continue  # its slice could not be read (logged)
            try:
                event = await self._compare(cluster, inventory, entries)
            except EventLogError as e:  # this cluster's repair only: the others go on
                log.warning("anti-entropy repair of %s skipped: %s", cluster, e)
                continue
            finally:
                self.compared += 1
            if event is not None:
                repaired.append(event)
        return repaired

    async def _compare(
        self, cluster: str, inventory: InventoryDigest, entries: Mapping[str, DesiredEntry]
    ) -> AntiEntropyRepaired | None:
        now = self.clock()
        if cooling_down(self.last_repair.get(cluster), now, self.cooldown):
            return None  # repaired for an earlier digest of the same batch
        digest = hub_digest(entries)
        if digest == inventory.desired_digest:
            self._suspects.pop(cluster, None)
            return None
        found = {
            name: entries[name].seq
            for name in decide_repair(entries, inventory, now, settle=self.settle)
        }
        stale = confirmed(self._suspects.get(cluster), found)
        self._suspects[cluster] = found
        repaired = []
        for name in stale:
            try:
                await self.reader.redeliver(entries[name])
            except ConcurrencyConflict:
                continue  # written again meanwhile: that write is the delivery
            repaired.append(name)
        if not repaired:
            return None
        self._suspects.pop(cluster, None)
        self.last_repair[cluster] = now
        event = AntiEntropyRepaired(
            id=new_event_id(),
            occurred_at=now,
            actor="hub:anti-entropy",
            cluster=cluster,
            tasksets=repaired,
            edge_digest=inventory.desired_digest,
            hub_digest=digest,
        )
        await self.store.append([event])
        self.repairs += 1
        log.info("anti-entropy re-delivered %s to %s", ", ".join(repaired), cluster)
        return event
