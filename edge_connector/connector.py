"""The connector service: desired state in, executor calls out, report events into the outbox.

Four loops share one in-memory view (`held`: the latest ClusterTask per taskset):
- the feed loop records each delivered ClusterTask and marks its taskset for reconciliation;
- the reconcile loop applies or removes, one operation per taskset at a time, a bounded number
  of tasksets at once, re-queuing a taskset whose desired state changed meanwhile and retrying
  failures with backoff;
- the drift loop turns executor observations into DriftDetected / DriftCorrected by policy;
- the inventory loop publishes a digest of what is held and applied, for anti-entropy.
Every report goes through one ordered outbox writer that retries until the edge's nats-server
has stored it; the hub sources the outbox, so reports survive any hub outage.

Decisions live in `edge_connector.decisions`; this module only sequences I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from edge_connector import decisions
from edge_connector.errors import ApplyFailed, ConnectorError
from edge_connector.executor import AppliedTask, DriftObserved, Executor
from events.catalog import Report
from events.errors import EventLogError
from events.inventory import InventoryDigest
from events.tasks import cancel_and_wait
from taskset.errors import FleetbusError
from taskset.model import ClusterTask

log = logging.getLogger(__name__)

OUTBOX_DRAIN_S = 5.0
"""How long a stopping connector waits for its queued reports to be stored."""


@dataclass(frozen=True)
class Delivery:
    """One message of the cluster's desired state."""

    subject: str
    task: ClusterTask | None
    """None when the payload could not be decoded (logged and acknowledged)."""
    ack: Callable[[], Awaitable[None]]


class DesiredFeed(Protocol):
    """The cluster's desired state: the full state first, then every change, forever."""

    def deliveries(self) -> AsyncIterator[Delivery]: ...


class ReportSink(Protocol):
    async def append(self, event: Report) -> None:
        """Store the event durably (idempotent by event id) or raise an `EventLogError`."""
        ...


class InventorySink(Protocol):
    async def publish(self, inventory: InventoryDigest) -> None: ...


@dataclass(frozen=True)
class ConnectorSettings:
    cluster: str
    inventory_interval: float = 30.0
    retry_base: float = 1.0
    concurrency: int = 4
    outbox_retry_max: float = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Connector:
    settings: ConnectorSettings
    feed: DesiredFeed
    executor: Executor
    reports: ReportSink
    inventory_sink: InventorySink
    clock: Callable[[], datetime] = utc_now
    held: dict[str, ClusterTask] = field(default_factory=dict)
    reported: int = 0
    """Report events stored in the outbox so far."""
    _pending: set[str] = field(default_factory=set)
    _due: dict[str, float] = field(default_factory=dict)
    _attempts: dict[str, int] = field(default_factory=dict)
    _last_failure: dict[str, str] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _outbox: asyncio.Queue[Report] = field(default_factory=asyncio.Queue)

    @property
    def cluster(self) -> str:
        return self.settings.cluster

    async def run(self) -> None:
        """Run until cancelled; on cancellation, give queued reports a moment to be stored."""
        loops = [
            asyncio.create_task(self._feed_loop(), name=f"connector-feed-{self.cluster}"),
            asyncio.create_task(self._reconcile_loop(), name=f"connector-apply-{self.cluster}"),
            asyncio.create_task(self._drift_loop(), name=f"connector-drift-{self.cluster}"),
            asyncio.create_task(self._inventory_loop(), name=f"connector-inv-{self.cluster}"),
        ]
        writer = asyncio.create_task(self._outbox_loop(), name=f"connector-outbox-{self.cluster}")
        try:
            done, _ = await asyncio.wait([*loops, writer], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await cancel_and_wait([*loops, *self._inflight.values()])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._outbox_drained()), timeout=OUTBOX_DRAIN_S
                )
            await cancel_and_wait([writer])

    async def _outbox_drained(self) -> None:
        await self._outbox.join()

    def report(self, event: Report) -> None:
        self._outbox.put_nowait(event)

    async def inventory(self) -> InventoryDigest:
        return decisions.inventory_digest(
            self.cluster, self.held, await self.executor.inventory(), self.clock()
        )

    # --- loops -------------------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        """Follow the feed; if it breaks (its server restarting), follow it again."""
        delay = 0.5
        while True:
            try:
                async for delivery in self.feed.deliveries():
                    delay = 0.5
                    await self._receive(delivery)
            except (ConnectorError, EventLogError) as e:
                log.warning("desired state feed interrupted (%s); resuming in %.1fs", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.outbox_retry_max)

    async def _receive(self, delivery: Delivery) -> None:
        task = delivery.task
        if task is None:
            log.warning("undecodable desired state on %s; skipped", delivery.subject)
        elif task.cluster != self.cluster:
            log.warning(
                "desired state for cluster %s on %s ignored", task.cluster, delivery.subject
            )
        else:
            # Even an unchanged task is reconciled: a re-delivery (anti-entropy) means the hub
            # saw this cluster lacking it, and reconciling what is applied is a no-op.
            self.held[task.taskset_name] = task
            self._schedule(task.taskset_name)
        await delivery.ack()

    def _schedule(self, name: str, delay: float = 0.0) -> None:
        self._pending.add(name)
        if delay > 0:
            self._due[name] = time.monotonic() + delay
        else:
            self._due.pop(name, None)
        self._wake.set()

    async def _reconcile_loop(self) -> None:
        while True:
            now = time.monotonic()
            for name in sorted(self._pending):
                if len(self._inflight) >= self.settings.concurrency:
                    break
                if name in self._inflight or self._due.get(name, 0.0) > now:
                    continue
                self._pending.discard(name)
                self._due.pop(name, None)
                job = asyncio.create_task(self._reconcile(name), name=f"reconcile-{name}")
                self._inflight[name] = job
                job.add_done_callback(functools.partial(self._finished, name))
            waits = [due - now for name, due in self._due.items() if name in self._pending]
            timeout = max(min(waits), 0.0) if waits else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _finished(self, name: str, _job: asyncio.Task[None]) -> None:
        job = self._inflight.pop(name, None)
        if job is not None and not job.cancelled() and job.exception() is not None:
            log.error("reconciling %s failed unexpectedly", name, exc_info=job.exception())
            self._schedule(name, decisions.retry_delay(1, self.settings.retry_base))
        self._wake.set()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _reconcile(self, name: str) -> None:
        task = self.held[name]
        async with self._lock(name):
            applied = (await self.executor.inventory()).applied.get(name)
            action = decisions.plan_task(task, applied)
            if action == "none":
                self._attempts.pop(name, None)
                self._last_failure.pop(name, None)
                return
            try:
                if action == "remove":
                    result = await self.executor.remove(task)
                else:
                    result = await self.executor.apply(task)
            except ApplyFailed as failure:
                attempt = self._attempts.get(name, 0) + 1
                self._attempts[name] = attempt
                if self._last_failure.get(name) != str(failure):
                    self.report(
                        decisions.failed_event(task, failure, self.clock(), attempt=attempt)
                    )
                    self._last_failure[name] = str(failure)
                if self.held.get(name) is task:
                    self._schedule(name, decisions.retry_delay(attempt, self.settings.retry_base))
            else:
                self._attempts.pop(name, None)
                self._last_failure.pop(name, None)
                self.report(decisions.applied_event(task, result, self.clock()))
        if self.held.get(name) is not task:
            self._schedule(name)

    async def _drift_loop(self) -> None:
        async for observed in self.executor.drift():
            await self._handle_drift(observed)

    async def _handle_drift(self, observed: DriftObserved) -> None:
        task = self.held.get(observed.taskset)
        decision = decisions.decide_drift_report(task, observed)
        for event in decision.events:
            self.report(event)
        if not decision.correct or task is None:
            return
        async with self._lock(observed.taskset):
            if self.held.get(observed.taskset) is not task:
                return  # a newer desired state is being applied anyway
            try:
                await self.executor.apply(task)
            except ApplyFailed as failure:
                self.report(decisions.failed_event(task, failure, self.clock()))
                self._schedule(observed.taskset, decisions.retry_delay(1, self.settings.retry_base))
                return
        self.report(decisions.corrected_event(task, observed, decision.events[0].id, self.clock()))

    async def _inventory_loop(self) -> None:
        """Send a digest every interval, and re-check what is held against what runs."""
        # The first digest goes out soon after start: it tells the hub this edge is back.
        delay = min(self.settings.inventory_interval, 1.0)
        while True:
            await asyncio.sleep(delay)
            delay = self.settings.inventory_interval
            try:
                executor_inventory = await self.executor.inventory()
                self._recheck(executor_inventory.applied)
                await self.inventory_sink.publish(
                    decisions.inventory_digest(
                        self.cluster, self.held, executor_inventory, self.clock()
                    )
                )
            except FleetbusError as e:
                log.warning("inventory digest not sent: %s", e)

    def _recheck(self, applied: Mapping[str, AppliedTask]) -> None:
        """Reconcile held tasks the executor no longer runs as held (its state was lost)."""
        for name, task in self.held.items():
            if name in self._inflight or name in self._pending:
                continue
            if decisions.plan_task(task, applied.get(name)) != "none":
                log.info("%s no longer runs as desired on %s; reconciling", name, self.cluster)
                self._schedule(name)

    async def _outbox_loop(self) -> None:
        while True:
            event = await self._outbox.get()
            delay = 0.1
            while True:
                try:
                    await self.reports.append(event)
                    break
                except EventLogError as e:
                    log.warning("outbox append of %s failed, retrying: %s", event.id, e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.outbox_retry_max)
            self.reported += 1
            self._outbox.task_done()
