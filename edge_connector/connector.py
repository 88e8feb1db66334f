"""The connector service: desired state in, executor calls out, report events into the outbox.

Loops share one in-memory view (`held`: the latest ClusterTask per taskset, compact: what
deciding needs, with the taskset's steps and objects kept apart as their compressed JSON and
decoded only for an apply, see `HeldTasks`):
- the feed loop records each delivered ClusterTask and queues its taskset;
- a bounded pool of workers takes tasksets from the shared keyed `WorkQueue` (one worker per
  taskset at a time; a taskset whose desired state changes while it is worked on comes back
  once the worker is done) and applies, removes or corrects drift, retrying failures with
  backoff through the same queue;
- the drift loop turns executor observations into DriftDetected by policy and queues the
  correction when the policy says to correct;
- the inventory loop publishes a digest of what is held and applied, for anti-entropy, with
  the connector's own health and the cluster controller's (judged from its heartbeats);
- the readiness loop checks that health every `readiness_check_interval` and sends a digest at
  once when it changed from what the hub was last told (connected and caught up, watches
  synced, a controller failing or back), not an inventory interval later; digests sent at once
  are at least `min_send_gap` apart, so a flapping edge does not flood the hub, and the last
  state is always sent.
Every report goes through one ordered outbox writer that retries until the edge's nats-server
has stored it; the hub sources the outbox, so reports survive any hub outage.

Decisions live in `edge_connector.decisions`; this module only sequences I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from edge_connector import decisions
from edge_connector.errors import ApplyFailed, ConnectorError
from edge_connector.executor import AppliedTask, DriftObserved, Executor, ExecutorInventory
from edge_connector.health import (
    Companion,
    ConnectorProgress,
    EdgeReadiness,
    HubLink,
    HubLinkState,
    companions_readiness,
    connector_readiness,
    edge_readiness,
    immediate_send_delay,
)
from events.catalog import Report
from events.errors import EventLogError
from events.inventory import ControllerStatus, EdgeStatus, InventoryDigest
from events.tasks import cancel_and_wait
from taskset.codec import decode_taskset, encode_taskset
from taskset.errors import FleetbusError
from taskset.model import ClusterTask, Taskset
from workqueue import WorkQueue

log = logging.getLogger(__name__)

OUTBOX_DRAIN_S = 5.0
"""How long a stopping connector waits for its queued reports to be stored."""
INVENTORY_WAIT_S = 5.0
"""How long a digest waits for the executor's inventory before it goes without it."""


@dataclass(frozen=True)
class Delivery:
    """One message of the cluster's desired state."""

    subject: str
    task: ClusterTask | None
    """None when the payload could not be decoded (logged and acknowledged)."""
    ack: Callable[[], Awaitable[None]]
    seq: int = 0
    """The message's sequence in the stream it was read from (0: not known)."""
    pending: int = 0
    """Messages of the feed still waiting behind this one when it was delivered."""


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
    readiness_check_interval: float = 1.0
    """How often the edge's readiness is checked for a change to tell the hub at once."""
    min_send_gap: float = 1.0
    """Digests sent at once on a change are at least this far apart (seconds)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FailureStreak:
    """Consecutive failed attempts at one taskset: the backoff counts them, and a failure is
    reported once until its message changes."""

    attempts: int = 0
    last_message: str = ""


@dataclass(frozen=True)
class DriftCorrection:
    """A correction the drift policy asked for: re-apply `task`, then report it as correcting
    the DriftDetected event `detected_id`."""

    task: ClusterTask
    observed: DriftObserved
    detected_id: str


def _without_steps(taskset: Taskset) -> Taskset:
    return msgspec.structs.replace(
        taskset, init=[], install=[], post_install=[], pre_delete=[], source=None, settings={}
    )


class HeldTasks(dict[str, ClusterTask]):
    """The latest ClusterTask per taskset, compact: each as deciding needs it (identity,
    generation, digest, drift policy and ignore paths), its taskset's steps, objects, source
    and settings kept apart as compressed JSON (`taskset.codec`), a few times smaller than
    the decoded objects; `whole()` gives the full ClusterTask back for an apply."""

    def __init__(self) -> None:
        super().__init__()
        self._bodies: dict[str, bytes] = {}

    def hold(self, task: ClusterTask) -> ClusterTask:
        """Keep `task` (replacing what was held for its taskset); the compact task held."""
        name = task.taskset_name
        if task.taskset is None:
            self._bodies.pop(name, None)
            compact = task
        else:
            self._bodies[name] = encode_taskset(task.taskset)
            compact = msgspec.structs.replace(task, taskset=_without_steps(task.taskset))
        self[name] = compact
        return compact

    def whole(self, task: ClusterTask) -> ClusterTask:
        """The full ClusterTask of `task`, which must be what is held for its taskset (take it
        before any await: a newer delivery replaces it)."""
        name = task.taskset_name
        if self.get(name) is not task:
            raise ConnectorError(f"{name}: not the ClusterTask held for it")
        body = self._bodies.get(name)
        if body is None:
            return task
        return msgspec.structs.replace(task, taskset=decode_taskset(body))


@dataclass
class Connector:
    settings: ConnectorSettings
    feed: DesiredFeed
    executor: Executor
    reports: ReportSink
    inventory_sink: InventorySink
    clock: Callable[[], datetime] = utc_now
    hub_link: HubLink | None = None
    """Where readiness learns of the hub link (None: readiness is not known here)."""
    version: str = ""
    """The connector's version, told to the hub in each inventory digest."""
    companions: list[Companion] = field(default_factory=list)
    """Components sharing the connector's process; their health joins its readiness."""
    held: HeldTasks = field(default_factory=lambda: HeldTasks())
    reported: int = 0
    """Report events stored in the outbox so far."""
    made: int = 0
    """Report events made so far (stored or waiting for the outbox)."""
    delivered_seq: int = 0
    """Stream sequence of the last desired-state message the feed handed over."""
    feed_pending: int = 0
    """Messages the feed still had behind its last delivery."""
    controller: ControllerStatus | None = None
    """The cluster controller's health as last judged from its heartbeats (None: the
    executor has no controller, or its heartbeats were not read yet)."""
    _queue: WorkQueue[str] = field(default_factory=WorkQueue)
    _failures: dict[str, FailureStreak] = field(default_factory=dict)
    _corrections: dict[str, DriftCorrection] = field(default_factory=dict)
    _outbox: asyncio.Queue[Report] = field(default_factory=asyncio.Queue)
    _capabilities_sent: str = ""
    """Digest of the capabilities the last full inventory carried."""
    _digests_since_capabilities: int = 0
    _inventory_now: asyncio.Event = field(default_factory=asyncio.Event)
    _told_readiness: EdgeReadiness | None = None
    """The readiness the last digest the hub received carried (None: none sent yet)."""
    _last_sent_at: float | None = None
    """When (monotonic) the last digest was sent or tried."""

    @property
    def cluster(self) -> str:
        return self.settings.cluster

    async def run(self) -> None:
        """Run until cancelled; on cancellation, give queued reports a moment to be stored."""
        workers = [
            asyncio.create_task(self._worker(), name=f"connector-apply-{self.cluster}-{n}")
            for n in range(self.settings.concurrency)
        ]
        loops = [
            asyncio.create_task(self._feed_loop(), name=f"connector-feed-{self.cluster}"),
            asyncio.create_task(self._drift_loop(), name=f"connector-drift-{self.cluster}"),
            asyncio.create_task(self._inventory_loop(), name=f"connector-inv-{self.cluster}"),
            asyncio.create_task(self._readiness_loop(), name=f"connector-ready-{self.cluster}"),
            *workers,
        ]
        writer = asyncio.create_task(self._outbox_loop(), name=f"connector-outbox-{self.cluster}")
        try:
            done, _ = await asyncio.wait([*loops, writer], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await cancel_and_wait(loops)
            self._queue.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(self._outbox_drained()), timeout=OUTBOX_DRAIN_S
                )
            await cancel_and_wait([writer])

    async def _outbox_drained(self) -> None:
        await self._outbox.join()

    def report(self, event: Report) -> None:
        self.made += 1
        self._outbox.put_nowait(event)

    async def readiness(self) -> tuple[bool, str, HubLinkState | None]:
        """Connected to the hub and caught up (`edge_connector.health`), with the link seen."""
        if self.hub_link is None:
            return False, "no hub link to check", None
        link = await self.hub_link.state()
        healthy, why = companions_readiness(self.companions)
        if not healthy:
            return False, why, link
        ready, reason = connector_readiness(link, self.progress())
        return ready, reason, link

    def send_inventory_now(self) -> None:
        """Send the next inventory digest at once (the edge's health changed: the hub learns
        of it now, not an interval later), yet no sooner than `min_send_gap` after the last."""
        self._inventory_now.set()

    def progress(self) -> ConnectorProgress:
        """Counters for readiness and metrics (`edge_connector.health`)."""
        return ConnectorProgress(
            delivered_seq=self.delivered_seq,
            feed_pending=self.feed_pending,
            outbox_pending=self.made - self.reported,
            held=len(self.held),
            failing=len(self._failures),
            reported=self.reported,
        )

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
        self.delivered_seq = max(self.delivered_seq, delivery.seq)
        self.feed_pending = delivery.pending
        if task is None:
            log.warning("undecodable desired state on %s; skipped", delivery.subject)
        elif task.cluster != self.cluster:
            log.warning(
                "desired state for cluster %s on %s ignored", task.cluster, delivery.subject
            )
        else:
            # Even an unchanged task is reconciled: a re-delivery (anti-entropy) means the hub
            # saw this cluster lacking it, and reconciling what is applied is a no-op.
            self.held.hold(task)
            self._schedule(task.taskset_name)
        await delivery.ack()

    def _schedule(self, name: str, delay: float = 0.0) -> None:
        if delay > 0:
            self._queue.add_after(name, delay)
        else:
            self._queue.add(name)

    async def _worker(self) -> None:
        """Take tasksets from the queue, one worker per taskset at a time, until cancelled."""
        while True:
            name = await self._queue.get()
            try:
                await self._work(name)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug, not a cluster answer: log it and try again later
                log.exception("reconciling %s failed unexpectedly", name)
                self._schedule(name, decisions.retry_delay(1, self.settings.retry_base))
            finally:
                self._queue.done(name)

    async def _work(self, name: str) -> None:
        correction = self._corrections.pop(name, None)
        if correction is not None and self.held.get(name) is correction.task:
            await self._correct(correction)
        else:
            # A newer desired state (or none asked for a correction): reconciling applies it.
            await self._reconcile(name)

    async def _reconcile(self, name: str) -> None:
        task = self.held[name]
        whole = self.held.whole(task)
        applied = (await self.executor.inventory()).applied.get(name)
        action = decisions.plan_task(task, applied)
        if action == "none":
            self._failures.pop(name, None)
            return
        try:
            if action == "remove":
                result = await self.executor.remove(whole)
            else:
                result = await self.executor.apply(whole)
        except ApplyFailed as failure:
            streak = self._failures.setdefault(name, FailureStreak())
            streak.attempts += 1
            if streak.last_message != str(failure):
                self.report(
                    decisions.failed_event(task, failure, self.clock(), attempt=streak.attempts)
                )
                streak.last_message = str(failure)
            if self.held.get(name) is task:
                self._schedule(
                    name, decisions.retry_delay(streak.attempts, self.settings.retry_base)
                )
        else:
            self._failures.pop(name, None)
            self.report(decisions.applied_event(task, result, self.clock()))

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
        self._corrections[observed.taskset] = DriftCorrection(
            task=task, observed=observed, detected_id=decision.events[0].id
        )
        self._schedule(observed.taskset)

    async def _correct(self, correction: DriftCorrection) -> None:
        task = correction.task
        whole = self.held.whole(task)
        try:
            await self.executor.apply(whole)
        except ApplyFailed as failure:
            self.report(decisions.failed_event(task, failure, self.clock()))
            self._schedule(task.taskset_name, decisions.retry_delay(1, self.settings.retry_base))
            return
        self.report(
            decisions.corrected_event(
                task, correction.observed, correction.detected_id, self.clock()
            )
        )

    async def _inventory_loop(self) -> None:
        """Send a digest every interval, and re-check what is held against what runs."""
        # The first digest goes out soon after start: it tells the hub this edge is back.
        delay = min(self.settings.inventory_interval, 1.0)
        while True:
            try:
                await asyncio.wait_for(self._inventory_now.wait(), timeout=delay)
            except TimeoutError:
                pass
            else:
                # Asked for at once: coalesce with the digest sent last.
                await asyncio.sleep(
                    immediate_send_delay(
                        self._last_sent_at, time.monotonic(), self.settings.min_send_gap
                    )
                )
            self._inventory_now.clear()
            delay = self.settings.inventory_interval
            self._last_sent_at = time.monotonic()
            try:
                await self._send_inventory()
            except FleetbusError as e:
                log.warning("inventory digest not sent: %s", e)

    async def _readiness_loop(self) -> None:
        """Send a digest at once when the edge's readiness differs from what the hub was told
        last (the first digest goes out on its own soon after start)."""
        problem = ""
        while True:
            await asyncio.sleep(self.settings.readiness_check_interval)
            if self.hub_link is None or self._told_readiness is None:
                continue
            try:
                ready, _, _ = await self.readiness()
                controller = await self.executor.controller_status()
            except FleetbusError as e:
                if str(e) != problem:  # once per distinct reason, not every second
                    log.warning("readiness not checked: %s", e)
                problem = str(e)
                continue
            problem = ""
            if controller is not None:
                self.controller = controller
            now = edge_readiness(ready, self.controller)
            if now != self._told_readiness and not self._inventory_now.is_set():
                # Logged once the digest is sent (`_send_inventory`), with the state it
                # carries: by then the edge may be back where the hub was last told.
                self.send_inventory_now()

    async def _send_inventory(self) -> None:
        try:
            async with asyncio.timeout(INVENTORY_WAIT_S):
                executor_inventory = await self.executor.inventory()
        except (FleetbusError, TimeoutError) as e:
            # The hub still hears the edge's health (and so the controller's, which is what
            # an executor with no CRDs served yet most likely lacks); applied stays unknown.
            log.warning("inventory of the cluster not read: %s", str(e) or "no answer in time")
            executor_inventory = ExecutorInventory(applied={}, live_digest="", objects=0)
        else:
            self._recheck(executor_inventory.applied)
        controller = await self.executor.controller_status()
        if controller is not None:
            self.controller = controller
        caps = executor_inventory.capabilities
        digest_of_caps = caps.digest if caps is not None else ""
        full = decisions.send_capabilities(
            digest_of_caps, self._capabilities_sent, self._digests_since_capabilities
        )
        digest = decisions.inventory_digest(
            self.cluster,
            self.held,
            executor_inventory,
            self.clock(),
            with_capabilities=full,
        )
        told: EdgeReadiness | None = None
        reason = ""
        if self.hub_link is not None:
            ready, reason, _ = await self.readiness()
            digest = msgspec.structs.replace(
                digest,
                edge=EdgeStatus(
                    version=self.version, ready=ready, reason=reason, controller=self.controller
                ),
            )
            told = edge_readiness(ready, self.controller)
        await self.inventory_sink.publish(digest)
        if told is not None and told != self._told_readiness:
            controller_reason = self.controller.reason if self.controller is not None else ""
            log.info(
                "edge readiness told to the hub: %s",
                _readiness_said(told, reason, controller_reason),
            )
        self._told_readiness = told
        if full:
            self._capabilities_sent = digest_of_caps
            self._digests_since_capabilities = 0
        else:
            self._digests_since_capabilities += 1

    def _recheck(self, applied: Mapping[str, AppliedTask]) -> None:
        """Reconcile held tasks the executor no longer runs as held (its state was lost)."""
        for name, task in self.held.items():
            if name in self._queue:
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


def _readiness_said(readiness: EdgeReadiness, reason: str, controller_reason: str) -> str:
    """The readiness told to the hub, each verdict with the reason given for it."""
    ready, controller = readiness
    said = f"connector {'ready' if ready else 'not ready'}"
    if reason:
        said += f" ({reason})"
    if controller is not None:
        said += f", cluster controller {'ready' if controller else 'not ready'}"
        if controller_reason:
            said += f" ({controller_reason})"
    return said
