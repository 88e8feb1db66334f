"""The scheduler service: hold the lease, rebuild state from the log, then decide as events come.

Start-up: wait for the lease; load the newest usable snapshot (`scheduler.snapshot_store`) and
fold the EVENTS and REPORTS after it (all of them without one); read which generation DESIRED
holds for every subject; purge DESIRED of deregistered clusters; decide every taskset once
(this also repairs a crash between appending a decision and writing DESIRED). Then follow
both streams through durable consumers and decide again for the tasksets each batch touched,
and when a rollout pause ends.

Every decision is appended to the log before DESIRED is written, each append conditional on
the schedule subject's last sequence, so two schedulers can never both write a generation;
a conflict means the lease was lost, and the service stops deciding and starts over.

While it holds the lease, the scheduler takes a snapshot every `snapshot_every` events. The
snapshot is folded from the log beside the live state (never copied from it: the live state
holds its own decisions with the time it made them, the log with the time it stored them), so
a restart from it arrives where a full replay does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from events.catalog import SCHEDULE_CHUNK, ClusterDeregistered, ClusterTaskScheduled, Event
from events.errors import ConcurrencyConflict, EventLogError, EventLogUnavailable
from events.ids import new_event_id
from events.store import Append, EventStore
from events.streams import EVENTS_STREAM, REPORTS_STREAM
from events.tasks import cancel_and_wait
from scheduler.blueprint_rollout import decide_blueprint_rollout
from scheduler.bus import Delivered, SchedulerBus
from scheduler.decide import Decision, DesiredWrite, decide_taskset
from scheduler.errors import LeaseLost, SchedulerError
from scheduler.materialize import Materializer
from scheduler.ports import ChartRenderer
from scheduler.snapshot_store import SNAPSHOT_EVERY, SNAPSHOT_KEEP, SnapshotStore, SnapshotTaker
from scheduler.state import ALL_TASKSETS, SchedulerState, TasksetRecord
from taskset.errors import FleetbusError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

EXECUTE_CHUNK = SCHEDULE_CHUNK
"""Clusters whose events are appended together before their ClusterTasks are written."""
BLUEPRINT_WAKEUP = "blueprint:"
"""Prefix of a wake-up that belongs to a blueprint's rollout pause, not to a taskset."""
SNAPSHOT_RETRY_MAX_S = 60.0
"""Longest wait before trying again to take a snapshot that failed."""
COALESCE_LIMIT = 20_000
"""Deliveries one handling may take from the queue at once (see `coalesced`)."""


def cluster_units(
    events: list[Event], writes: list[DesiredWrite]
) -> dict[str, tuple[list[Event], list[DesiredWrite]]]:
    """A decision split per cluster, each part in its original order; the part under "" holds
    the events that concern no single cluster (they go first). A `ClusterTaskScheduled` names
    a chunk of clusters: see `execution_batches`."""
    units: dict[str, tuple[list[Event], list[DesiredWrite]]] = {"": ([], [])}
    for event in events:
        cluster = getattr(event, "cluster", "")
        units.setdefault(cluster if isinstance(cluster, str) else "", ([], []))[0].append(event)
    for write in writes:
        units.setdefault(write.task.cluster, ([], []))[1].append(write)
    return units


Batch = tuple[list[Event], list[DesiredWrite]]


def execution_batches(
    events: list[Event], writes: list[DesiredWrite], size: int = EXECUTE_CHUNK
) -> tuple[list[Event], list[Batch]]:
    """A decision as the events that concern no single cluster (appended first, one by one),
    then batches of clusters: each `ClusterTaskScheduled` chunk with the other events and the
    DESIRED writes of the clusters it names, then the remaining clusters `size` at a time.

    Within a batch the events are appended before the writes are made; batches are
    independent of each other, so one's writes overlap the next one's appends."""
    chunks = [event for event in events if isinstance(event, ClusterTaskScheduled)]
    units = cluster_units(
        [event for event in events if not isinstance(event, ClusterTaskScheduled)], writes
    )
    loose = units.pop("")[0]
    batches: list[Batch] = []
    for chunk in chunks:
        batch_events: list[Event] = [chunk]
        batch_writes: list[DesiredWrite] = []
        for name in chunk.names():
            unit = units.pop(name, None)
            if unit is not None:
                batch_events.extend(unit[0])
                batch_writes.extend(unit[1])
        batches.append((batch_events, batch_writes))
    rest = list(units)
    for start in range(0, len(rest), size):
        names = rest[start : start + size]
        batches.append(
            (
                [event for name in names for event in units[name][0]],
                [write for name in names for write in units[name][1]],
            )
        )
    return loose, batches


def subject_rounds(events: list[Event]) -> list[list[Event]]:
    """The events in rounds where no subject appears twice, each subject's events in order:
    an append conditional on a subject must see that subject's previous append stored."""
    rounds: list[list[Event]] = []
    seen: dict[str, int] = {}
    for event in events:
        index = seen.get(event.subject, -1) + 1
        seen[event.subject] = index
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(event)
    return rounds


def coalesced(
    first: list[Delivered], queue: asyncio.Queue[list[Delivered]], limit: int = COALESCE_LIMIT
) -> list[Delivered]:
    """`first` and the batches already waiting behind it, taken whole until there are `limit`
    deliveries.

    Each batch handled costs a decision over every cluster of the tasksets it touched; a burst
    of reports (thousands of clusters answering one publish) is decided on once, not once per
    pull batch."""
    batch = list(first)
    while len(batch) < limit and not queue.empty():
        batch.extend(queue.get_nowait())
    return batch


def first_cause(error: BaseException) -> BaseException:
    """The first error that is not a group: what the log names when a task group of the
    scheduler ends (its own groups nest, and "unhandled errors in a TaskGroup" says nothing)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def utc_now() -> datetime:
    return datetime.now(UTC)


class Lease:
    """The scheduler's leader lease (see `scheduler.bus`): acquire, keep renewed, release."""

    def __init__(self, bus: SchedulerBus, holder: str, ttl_s: int = 15) -> None:
        self.bus = bus
        self.holder = holder
        self.ttl_s = ttl_s
        self.seq = 0

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the lease (True), or `stop` is set (False).

        A hub whose JetStream does not answer yet (still starting, electing leaders, or too
        busy to answer within the request's time) is waited for, with one warning, rather
        than ending the scheduler: nothing is decided before the lease is held."""
        stream_ensured = False
        announced = False
        unreachable = False
        while not stop.is_set():
            try:
                if not stream_ensured:
                    await self.bus.ensure_lease_stream()
                    stream_ensured = True
                seq, holder = await self.bus.lease_holder()
                if seq == 0 or holder == self.holder:
                    try:
                        self.seq = await self.bus.write_lease(self.holder, seq, self.ttl_s)
                        log.info("scheduler %s holds the lease", self.holder)
                        return True
                    except LeaseLost:
                        pass
                elif not announced:
                    log.info("scheduler %s waits: %s holds the lease", self.holder, holder)
                    announced = True
            except EventLogUnavailable as e:
                if not unreachable:
                    log.warning(
                        "scheduler %s cannot reach the lease yet, asking again: %s", self.holder, e
                    )
                    unreachable = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(1.0, self.ttl_s / 4))
        return False

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew well inside the TTL until `stop`; raise LeaseLost if another took it."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.ttl_s / 3)
            if stop.is_set():
                return
            try:
                self.seq = await self.bus.write_lease(self.holder, self.seq, self.ttl_s)
            except EventLogUnavailable as e:
                # Asked again at the next renewal: a lease that lapsed meanwhile and was taken
                # by another scheduler is refused then (LeaseLost below), never written over.
                log.warning("scheduler %s could not renew its lease yet: %s", self.holder, e)
            except LeaseLost:
                # Expired while this process was busy: take it back only if nobody else has.
                # Even then nothing is decided twice: every append is conditional.
                seq, _ = await self.bus.lease_holder()
                if seq != 0:
                    raise
                log.warning("scheduler %s renews an expired lease", self.holder)
                self.seq = await self.bus.write_lease(self.holder, 0, self.ttl_s)

    async def release(self) -> None:
        if self.seq:
            await self.bus.release_lease(self.seq)
            self.seq = 0


class SchedulerService:
    def __init__(
        self,
        store: EventStore,
        reports: EventStore,
        renderer: ChartRenderer | None,
        *,
        holder: str | None = None,
        clock: Clock = utc_now,
        lease_ttl_s: int = 15,
        durable_prefix: str = "scheduler",
        snapshot_every: int = SNAPSHOT_EVERY,
        snapshot_keep: int = SNAPSHOT_KEEP,
    ) -> None:
        self.store = store
        self.reports = reports
        self.bus = SchedulerBus(store)
        self.renderer = renderer
        self.materializer = Materializer(
            renderer, keys=store.sealer.keys if store.sealer is not None else None
        )
        self.holder = holder or f"scheduler-{uuid.uuid4().hex[:12]}"
        self.clock = clock
        self.lease_ttl_s = lease_ttl_s
        self.durable_prefix = durable_prefix
        self.state = SchedulerState()
        self.stored: dict[str, int] = {}
        self.wakeups: dict[str, datetime] = {}
        self._own_seqs: set[int] = set()
        self._events_floor = 0
        self._reports_floor = 0
        self.ready = asyncio.Event()
        """Set once start-up decisions are made (for tests and health checks)."""
        self.snapshot_every = snapshot_every
        """Events between two snapshots; 0 takes none (snapshots are still read)."""
        self.snapshots = SnapshotStore(store)
        self.taker = SnapshotTaker(store, reports, renderer, keep=snapshot_keep)
        self.started_from = 0
        """The EVENTS sequence of the snapshot the last rebuild started from (0: none)."""
        self._snapshot_floor = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; wait for the lease first; start over if it is lost."""
        while not stop.is_set():
            lease = Lease(self.bus, self.holder, self.lease_ttl_s)
            if not await lease.acquire(stop):
                return
            lost = asyncio.Event()
            try:
                async with asyncio.TaskGroup() as group:
                    keeper = group.create_task(self._keep(lease, stop, lost), name="lease")
                    await self._lead(stop, lost)
                    await cancel_and_wait([keeper])
            except* (LeaseLost, ConcurrencyConflict) as group_error:
                log.warning(
                    "scheduler %s stops deciding: %s", self.holder, first_cause(group_error)
                )
            except* EventLogError as group_error:
                log.warning(
                    "scheduler %s lost the log, starting over: %s",
                    self.holder,
                    first_cause(group_error),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
            finally:
                self.ready.clear()
                with contextlib.suppress(EventLogError):
                    await lease.release()

    async def _keep(self, lease: Lease, stop: asyncio.Event, lost: asyncio.Event) -> None:
        try:
            await lease.keep(stop)
        except LeaseLost:
            lost.set()
            raise

    async def _lead(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        await self.rebuild()
        halt = asyncio.Event()

        async def watch() -> None:
            done = asyncio.create_task(stop.wait())
            gone = asyncio.create_task(lost.wait())
            try:
                await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
                gone.cancel()
            halt.set()

        queue: asyncio.Queue[list[Delivered]] = asyncio.Queue(maxsize=16)
        async with asyncio.TaskGroup() as group:
            group.create_task(watch(), name="scheduler-watch")
            if self.snapshot_every > 0:
                group.create_task(self._take_snapshots(halt), name="scheduler-snapshots")
            group.create_task(
                self._feed(EVENTS_STREAM, "events", self._events_floor, queue, halt),
                name="scheduler-events",
            )
            group.create_task(
                self._feed(REPORTS_STREAM, "reports", self._reports_floor, queue, halt),
                name="scheduler-reports",
            )
            self.ready.set()
            halted = asyncio.create_task(halt.wait())
            try:
                while not halt.is_set():
                    getter = asyncio.create_task(queue.get())
                    try:
                        done, _ = await asyncio.wait(
                            {getter, halted},
                            timeout=self._next_wakeup_in(),
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                    finally:
                        if not getter.done():
                            getter.cancel()
                    if getter not in done:
                        if not halt.is_set():
                            await self.decide(self._due())
                        continue
                    await self.handle(coalesced(getter.result(), queue))
            finally:
                halted.cancel()
        if lost.is_set():
            raise LeaseLost("the lease was lost while deciding")

    async def _take_snapshots(self, halt: asyncio.Event) -> None:
        """Take a snapshot whenever `snapshot_every` events came since the last one; after a
        failure, wait twice as long before the next try (up to a minute)."""
        pause = 1.0
        while not halt.is_set():
            floor = max(self._snapshot_floor, self.taker.covered)
            if self.state.events_seq - floor >= self.snapshot_every:
                try:
                    info = await self.taker.take(self.clock())
                except (EventLogError, SchedulerError) as e:
                    log.warning("scheduler %s could not take a snapshot: %s", self.holder, e)
                    pause = min(pause * 2, SNAPSHOT_RETRY_MAX_S)
                else:
                    pause = 1.0
                    if info is not None:
                        self._snapshot_floor = info.events_seq
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), timeout=pause)

    async def _feed(
        self,
        stream: str,
        kind: str,
        floor: int,
        queue: asyncio.Queue[list[Delivered]],
        halt: asyncio.Event,
    ) -> None:
        durable = f"{self.durable_prefix}-{kind}"
        async for batch in self.bus.deliveries(stream, durable, floor + 1, halt):
            put = asyncio.create_task(queue.put(batch))
            stopped = asyncio.create_task(halt.wait())
            done, _ = await asyncio.wait({put, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if put not in done:
                put.cancel()
                return

    # --- start-up --------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Fold the log from the newest snapshot, learn what DESIRED holds, repair, and decide
        everything once."""
        self.state = await self.restored_state()
        self._own_seqs.clear()
        self.wakeups.clear()
        async for stored in self.store.read(
            from_seq=self.state.events_seq + 1, skip_undecodable=True
        ):
            self.state.apply_event(stored.seq, stored.subject, stored.stored_at, stored.event)
        self._events_floor = self.state.events_seq
        async for stored in self.reports.read(
            from_seq=self.state.reports_seq + 1, skip_undecodable=True
        ):
            self.state.apply_report(
                stored.seq, stored.stored_at, stored.event, stored.headers, stored.subject
            )
        self._reports_floor = self.state.reports_seq
        self.stored = await self.bus.stored_generations()
        for cluster in sorted(self.state.deregistered - set(self.state.clusters)):
            await self.bus.purge_cluster(cluster)
            self._forget_stored(cluster)
        await self.decide(set(self.state.tasksets))
        log.info(
            "scheduler %s rebuilt: %d clusters, %d tasksets, EVENTS at %d, REPORTS at %d",
            self.holder,
            len(self.state.clusters),
            len(self.state.tasksets),
            self._events_floor,
            self._reports_floor,
        )

    async def restored_state(self) -> SchedulerState:
        """The state of the newest usable snapshot, or an empty one."""
        self.started_from = 0
        loaded = await self.snapshots.load_state(
            await self.store.last_sequence(), await self.reports.last_sequence()
        )
        if loaded is None:
            return SchedulerState()
        info, state = loaded
        self.started_from = self._snapshot_floor = info.events_seq
        log.info(
            "scheduler %s starts from snapshot %s (EVENTS %d, REPORTS %d)",
            self.holder,
            info.id,
            info.events_seq,
            info.reports_seq,
        )
        return state

    def _forget_stored(self, cluster: str) -> None:
        prefix = f"fleet.desired.{cluster}."
        for subject in [s for s in self.stored if s.startswith(prefix)]:
            del self.stored[subject]

    # --- live -------------------------------------------------------------------------------

    async def handle(self, batch: list[Delivered]) -> None:
        """Fold a batch, decide for what it touched, then acknowledge it."""
        dirty: set[str] = set()
        purges: list[str] = []
        for delivered in batch:
            if delivered.stream == EVENTS_STREAM:
                if delivered.seq <= self._events_floor or delivered.seq in self._own_seqs:
                    self._own_seqs.discard(delivered.seq)
                    continue
                if delivered.event is None:
                    continue
                dirty |= self.state.apply_event(
                    delivered.seq, delivered.subject, delivered.stored_at, delivered.event
                )
                if isinstance(delivered.event, ClusterDeregistered):
                    purges.append(delivered.event.cluster)
            else:
                if delivered.seq <= self._reports_floor or delivered.event is None:
                    continue
                dirty |= self.state.apply_report(
                    delivered.seq,
                    delivered.stored_at,
                    delivered.event,
                    delivered.headers,
                    delivered.subject,
                )
        for cluster in purges:
            if cluster not in self.state.clusters:
                await self.bus.purge_cluster(cluster)
                self._forget_stored(cluster)
        if ALL_TASKSETS in dirty:
            dirty = set(self.state.tasksets)
        await self.decide(dirty)
        for delivered in batch:
            await delivered.ack()

    def _next_wakeup_in(self) -> float | None:
        if not self.wakeups:
            return None
        soonest = min(self.wakeups.values())
        return max(0.0, (soonest - self.clock()).total_seconds()) + 0.01

    def _due(self) -> set[str]:
        now = self.clock()
        due = {name for name, at in self.wakeups.items() if at <= now}
        for name in due:
            del self.wakeups[name]
        return due

    async def decide(self, tasksets: set[str]) -> None:
        tasksets = set(tasksets) | await self._advance_blueprints()
        await self._prepare_charts(tasksets)
        now = self.clock()
        decisions: list[tuple[str, Decision]] = []
        for name in sorted(tasksets):
            decision = decide_taskset(
                self.state, name, now, self.materializer, new_event_id, self.stored
            )
            decisions.append((name, decision))
        for name, decision in decisions:
            await self.execute(decision)
            if name.startswith(BLUEPRINT_WAKEUP):
                continue
            if decision.wake_at is not None:
                self.wakeups[name] = decision.wake_at
            else:
                self.wakeups.pop(name, None)

    async def _advance_blueprints(self) -> set[str]:
        """Take the next step of every blueprint's rollout; the tasksets a new wave touches."""
        now = self.clock()
        touched: set[str] = set()
        for name in sorted(self.state.blueprints):
            decision = decide_blueprint_rollout(self.state, name, now, new_event_id)
            for event in decision.events:
                await self._append_and_fold(event)
                touched |= self.state.blueprints[name].tasksets
            key = f"{BLUEPRINT_WAKEUP}{name}"
            if decision.wake_at is not None:
                self.wakeups[key] = decision.wake_at
            else:
                self.wakeups.pop(key, None)
        return touched

    def _renders_per_cluster(self, record: TasksetRecord) -> bool:
        """Whether the latest snapshot is a chart rendered per cluster context (it consults
        `.Capabilities` or `.Release`, and there are capabilities or releases to render for)."""
        latest = record.versions.get(record.latest)
        if latest is None or latest.format != "helm":
            return False
        source = latest.snapshot().taskset.source
        return source is not None and bool(source.consults)

    async def _prepare_charts(self, tasksets: set[str]) -> None:
        """Fetch the chart archives that values overrides of these tasksets, or per-cluster
        renders (capabilities, release), will re-render."""
        if self.renderer is None:
            return
        for name in sorted(tasksets):
            entries = [
                entry
                for blueprint in self.state.blueprints.values()
                if name in blueprint.tasksets
                for published in blueprint.versions.values()
                for entry in published.entries
                if entry.taskset == name and entry.values
            ]
            record = self.state.tasksets.get(name)
            if record is None:
                continue
            if (
                not entries
                and not any(o.values for o in self.state.overrides.get(name, {}).values())
                and not self._renders_per_cluster(record)
            ):
                continue
            versions = (
                {record.latest}
                | {r.version for r in self.state.scheduled.get(name, {}).values()}
                | {entry.version for entry in entries if entry.version}
            )
            for version in sorted(versions):
                snapshot = record.versions.get(version)
                if snapshot is None or snapshot.format != "helm":
                    continue
                archive = snapshot.snapshot().chart_archive
                if not archive:
                    continue
                try:
                    await self.renderer.prepare(archive)
                except FleetbusError as e:
                    # The decision will refuse the values override for this cluster, saying why.
                    log.warning("cannot prepare chart %s of %s: %s", archive, name, e)

    async def execute(self, decision: Decision) -> None:
        """Append the decision's events (conditionally), fold them, then write DESIRED.

        The order holds per cluster: a cluster's ClusterTask is written only once the events
        deciding it are in the log. Clusters are independent, so they go in chunks of
        up to `EXECUTE_CHUNK` (one `ClusterTaskScheduled` names up to `SCHEDULE_CHUNK` of a
        taskset's clusters): the batches' events are appended pipelined (`append_many`, each
        still conditional on its subject) one batch after the other, running ahead of the
        writes, and each batch's ClusterTasks are written pipelined as soon as its events are
        stored and the previous batch is written. Neither waits for the other: a fleet's
        last ClusterTaskScheduled is stored after its appends alone (not after every earlier
        batch's writes too), and the writes follow one another without a gap. A failed
        append stops the writes of its batch and of every later one."""
        events = decision.events
        while events and events[0].aggregate == "rollout":
            # The rollout step goes first, so the log reads in the order it was decided.
            await self._append_and_fold(events[0])
            events = events[1:]
        loose, batches = execution_batches(events, decision.writes)
        for event in loose:
            await self._append_and_fold(event)
        if not batches:
            return
        appended = [asyncio.Event() for _ in batches]

        async def append_ahead() -> None:
            for (batch_events, _), done in zip(batches, appended, strict=True):
                await self._append_all(batch_events)
                done.set()

        appending = asyncio.create_task(append_ahead(), name="scheduler-append-ahead")
        try:
            for (_, batch_writes), done in zip(batches, appended, strict=True):
                if not done.is_set():
                    waiting = asyncio.create_task(done.wait())
                    try:
                        await asyncio.wait(
                            {waiting, appending}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        await cancel_and_wait([waiting])
                    if not done.is_set():
                        appending.result()  # the append failed: raise its error
                        raise AssertionError("unreachable: appends ended before this batch")
                await self._write_all(batch_writes)
            await appending
        finally:
            if not appending.done():
                await cancel_and_wait([appending])
            elif not appending.cancelled():
                appending.exception()  # retrieved: a failed write is the error that goes on

    async def _append_all(self, events: list[Event]) -> None:
        """Append independent events pipelined, each conditional on its own subject; fold the
        stored ones, then raise the first failure."""
        for round_ in subject_rounds(events):
            commands = [
                Append(events=[event], expected=self.state.subject_seqs.get(event.subject, 0))
                for event in round_
            ]
            outcomes = await self.store.append_many(commands)
            failure: EventLogError | None = None
            for event, outcome in zip(round_, outcomes, strict=True):
                if isinstance(outcome, EventLogError):
                    failure = failure or outcome
                    continue
                seq = outcome.sequences[0]
                self._own_seqs.add(seq)
                self.state.apply_event(seq, event.subject, self.clock(), event)
            if failure is not None:
                raise failure

    async def _write_all(self, writes: list[DesiredWrite]) -> None:
        await self.bus.write_desired_many(writes)
        for write in writes:
            self.stored[write.subject] = write.task.generation

    async def _append_and_fold(self, event: Event) -> None:
        seq = await self._append(event)
        self._own_seqs.add(seq)
        self.state.apply_event(seq, event.subject, self.clock(), event)

    async def _append(self, event: Event) -> int:
        expected = self.state.subject_seqs.get(event.subject, 0)
        result = await self.store.append([event], expected=expected)
        return result.sequences[0]
