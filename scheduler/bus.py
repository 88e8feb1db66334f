"""The scheduler's operations on the log: DESIRED writes and scans, durable readers, the lease.

Each is a named operation of `events.port.JetStreamPort` (no module of `scheduler` holds a NATS
client or imports nats); what is decided here is what the headers and answers mean.

- DESIRED writes carry `Nats-Msg-Id` = `<cluster>.<taskset>.<generation>` (a retried write is
  stored once) and the generation, version and digest as headers, so the start-up scan can
  read what every cluster holds without decompressing bodies.
- Durable pull consumers on EVENTS and REPORTS track what the scheduler has acted on; their
  pending count is its lag.
- The lease is one message on `fleet.lease.scheduler` in the LEASES stream, written with
  `Nats-Expected-Last-Subject-Sequence` (compare-and-set) and a per-message TTL: the holder
  renews it well inside the TTL; if the holder dies, the message expires and a waiting
  scheduler takes over. Only the holder decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from events.catalog import Event
from events.errors import EventLogUnavailable, UndecodableEvent
from events.port import MAX_DIRECT_RESULTS, JetStreamPort, Outgoing, Pipeline, Received, Reply
from events.pull import PullSettings
from events.store import EventStore
from events.streams import DESIRED_STREAM, LEASES_STREAM, leases_stream
from events.subjects import desired_filter
from events.tasks import cancel_and_wait
from scheduler.decide import DesiredWrite
from scheduler.errors import DesiredWriteFailed, LeaseLost, SchedulerError
from sealing.envelope import KeyProvisioning, cluster_scope, seal_bytes
from taskset.codec import encode_cluster_task

log = logging.getLogger(__name__)

LEASE_SUBJECT = "fleet.lease.scheduler"
DESIRED_WINDOW = 512
"""DESIRED writes one pipelined batch keeps in flight."""
DESIRED_PATIENCE_S = 90.0
"""How long writes without an answer are checked and sent again before the scheduler gives
up on the log: far above a transient stall, inside DESIRED's 2-minute duplicate window (so
a write sent again is stored once)."""
DESIRED_WAIT_MAX_S = 20.0
"""The longest one round of writes sent again waits for its answers."""


async def _nothing_to_ack() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message from a durable consumer, decoded, with what is needed to acknowledge it."""

    stream: str
    seq: int
    subject: str
    stored_at: datetime
    event: Event | None
    headers: dict[str, str] | None
    acknowledge: Callable[[], Awaitable[None]] = _nothing_to_ack

    async def ack(self) -> None:
        await self.acknowledge()


class SchedulerBus:
    """The scheduler's operations on the log, each one named operation of `JetStreamPort`."""

    def __init__(
        self, store: EventStore, *, timeout: float = 5.0, patience: float = DESIRED_PATIENCE_S
    ) -> None:
        self.store = store
        self.port = JetStreamPort(store.api, timeout=timeout)
        self.timeout = timeout
        self.patience = patience
        """Seconds DESIRED writes left unanswered are checked and sent again (`_settle`)."""
        self.keys = store.sealer.keys if store.sealer is not None else None

    def _payload(self, write: DesiredWrite) -> bytes:
        """The ClusterTask as DESIRED holds it: sealed with the cluster's own data key, its
        subject as associated data (so it opens nowhere else), when the hub has a keyring."""
        payload = encode_cluster_task(write.task)
        if self.keys is None:
            return payload
        scope = cluster_scope(write.task.cluster)
        return seal_bytes(self.keys, scope, payload, write.subject.encode())

    # --- DESIRED ----------------------------------------------------------------------------

    async def write_desired(self, write: DesiredWrite) -> None:
        reply = await self.port.request(
            write.subject, self._payload(write), _desired_headers(write)
        )
        _check_ack(reply, write.subject)

    async def write_desired_many(
        self, writes: Sequence[DesiredWrite], *, window: int = DESIRED_WINDOW
    ) -> None:
        """Write many ClusterTasks (one subject each), pipelined: up to `window` in flight.

        One round trip per write is what a decision over thousands of clusters cannot afford;
        here the writes go out back to back and their acknowledgements come back on one
        subscription. Writes without an answer in time are not taken for lost: a busy
        JetStream may have stored them and answered late (see `_settle`). A refusal raises
        `DesiredWriteFailed` with its reason."""
        if not writes:
            return
        if isinstance(self.keys, KeyProvisioning):
            # New clusters' data keys made in one keyring write, not one per cluster.
            self.keys.ensure({cluster_scope(write.task.cluster) for write in writes})
        async with self.port.pipeline(f"write {DESIRED_STREAM}") as pipeline:
            for start in range(0, len(writes), window):
                chunk = writes[start : start + window]
                answers = await pipeline.send(
                    [self._outgoing(write) for write in chunk], within=self.timeout
                )
                unanswered = _unanswered(chunk, answers)
                if unanswered:
                    await self._settle(pipeline, unanswered)

    def _outgoing(self, write: DesiredWrite) -> Outgoing:
        return Outgoing(write.subject, self._payload(write), _desired_headers(write))

    async def _settle(self, pipeline: Pipeline, writes: list[DesiredWrite]) -> None:
        """Make sure `writes`, sent once without an answer in time, are stored: each round
        reads what DESIRED holds on their subjects (a write found there is done) and sends
        the others again with the same `Nats-Msg-Id` (stored once however often it is
        sent), waiting longer each round, for up to `patience` seconds in all. A slow
        JetStream (a stall of a few seconds, a burst of other work) costs time here, never
        the decision being written; only a DESIRED silent for all that time ends it
        (`EventLogUnavailable`, and the scheduler starts over)."""
        deadline = time.monotonic() + self.patience
        wait = self.timeout
        rounds = 0
        while True:
            writes = await self._not_stored(writes)
            if not writes:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise EventLogUnavailable(
                    f"no answer from JetStream for {writes[0].subject} and "
                    f"{len(writes) - 1} other DESIRED write(s) within {self.patience:.0f} s"
                )
            rounds += 1
            if rounds == 1:
                log.warning(
                    "DESIRED is slow to answer: %d write(s) (%s, …) sent again, "
                    "waiting up to %.0f s more",
                    len(writes),
                    writes[0].subject,
                    left,
                )
            within = min(wait, left)
            answers = await pipeline.send([self._outgoing(w) for w in writes], within=within)
            writes = _unanswered(writes, answers)
            if not writes:
                return
            wait = min(wait * 2, DESIRED_WAIT_MAX_S)

    async def _not_stored(self, writes: list[DesiredWrite]) -> list[DesiredWrite]:
        """The writes DESIRED does not hold yet (all of them when it does not answer)."""
        held: dict[str, tuple[str, str]] = {}
        for start in range(0, len(writes), MAX_DIRECT_RESULTS):
            group = writes[start : start + MAX_DIRECT_RESULTS]
            try:
                replies = await self.port.last_per_subject(
                    DESIRED_STREAM, [write.subject for write in group], MAX_DIRECT_RESULTS
                )
            except EventLogUnavailable:
                return writes
            for reply in replies:
                headers = reply.headers
                held[headers.get("Nats-Subject", "")] = (
                    headers.get("Fleetbus-Generation", ""),
                    headers.get("Fleetbus-Digest", ""),
                )
        return [
            write
            for write in writes
            if held.get(write.subject) != (str(write.task.generation), write.task.digest)
        ]

    async def stored_generations(self) -> dict[str, int]:
        """DESIRED subject -> generation of the ClusterTask it holds (headers only)."""
        headers = await self.port.last_headers_per_subject(DESIRED_STREAM)
        return {
            subject: int(found["Fleetbus-Generation"])
            for subject, found in headers.items()
            if "Fleetbus-Generation" in found
        }

    async def purge_cluster(self, cluster: str) -> None:
        """Drop every ClusterTask of a deregistered cluster from DESIRED."""
        await self.port.purge(DESIRED_STREAM, desired_filter(cluster))

    # --- durable readers --------------------------------------------------------------------

    async def deliveries(
        self, stream: str, durable: str, start_seq: int, stop: asyncio.Event
    ) -> AsyncIterator[list[Delivered]]:
        """Batches from durable `durable` on `stream`, created at `start_seq` if it is new."""
        await self.port.ensure_durable(
            stream, durable, start_seq=start_seq, ack_wait=120.0, max_ack_pending=20000
        )
        batches = self.port.durable_batches(stream, durable, PullSettings(batch=500))
        stopped = asyncio.create_task(stop.wait())
        received: asyncio.Future[list[Received]] | None = None
        try:
            while not stop.is_set():
                received = asyncio.ensure_future(anext(batches))
                await asyncio.wait({received, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not received.done():
                    await cancel_and_wait([received])
                    return
                yield [self._decode(message) for message in received.result()]
        finally:
            stopped.cancel()
            if received is not None and not received.done():
                # Cancelled while a batch was on its way (the scheduler stopping its readers
                # after another part failed): that read ends before the reader is closed, or
                # closing it fails ("asynchronous generator is already running") and hides
                # the failure that stopped the scheduler.
                await cancel_and_wait([received])
            await batches.aclose()

    def _decode(self, message: Received) -> Delivered:
        try:
            event: Event | None = self.store.decoder.decode(
                message.data, seq=message.seq, subject=message.subject
            )
        except UndecodableEvent as bad:
            log.warning(
                "skipping undecodable message %s on %s: %s", bad.seq, message.stream, bad.reason
            )
            event = None
        return Delivered(
            stream=message.stream,
            seq=message.seq,
            subject=message.subject,
            stored_at=message.stored_at,
            event=event,
            headers=message.headers,
            acknowledge=message.ack,
        )

    # --- the lease --------------------------------------------------------------------------

    async def ensure_lease_stream(self) -> None:
        # The hub creates LEASES with its streams' replicas (`fleetbus up --replicas`): keep them.
        await self.store.ensure_stream(leases_stream(), keep=("num_replicas",))

    async def lease_holder(self) -> tuple[int, str]:
        """(sequence, holder) of the current lease message, (0, "") when nobody holds it."""
        reply = await self.port.last_message(LEASES_STREAM, LEASE_SUBJECT)
        if reply is None:
            return 0, ""
        body: dict[str, Any] = reply.json()
        return int(reply.headers.get("Nats-Sequence", "0")), str(body.get("holder", ""))

    async def write_lease(self, holder: str, expected: int, ttl_s: int) -> int:
        """Compare-and-set the lease; the new sequence, or LeaseLost if someone else wrote."""
        headers = {
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            "Nats-TTL": f"{ttl_s}s",
        }
        reply = await self.port.request(LEASE_SUBJECT, orjson.dumps({"holder": holder}), headers)
        try:
            ack = orjson.loads(reply.data)
        except orjson.JSONDecodeError as e:
            raise SchedulerError(f"unreadable lease acknowledgement: {reply.data!r}") from e
        error = ack.get("error") if isinstance(ack, dict) else None
        if error:
            if int(error.get("err_code", 0)) in (10071, 10164):
                seq, current = await self.lease_holder()
                if current == holder and seq > expected:
                    # An earlier attempt of this very write was stored and its answer lost
                    # (a retry after a slow answer finds its own renewal): still ours.
                    return seq
                raise LeaseLost(f"the scheduler lease changed hands ({error.get('description')})")
            raise SchedulerError(f"lease write refused: {error.get('description')}")
        return int(ack["seq"])

    async def release_lease(self, seq: int) -> None:
        try:
            await self.port.delete_message(LEASES_STREAM, seq)
        except EventLogUnavailable as e:
            log.warning("the scheduler lease was not released (it lapses by itself): %s", e)


def _desired_headers(write: DesiredWrite) -> dict[str, str]:
    task = write.task
    return {
        "Nats-Msg-Id": write.msg_id,
        "Fleetbus-Generation": str(task.generation),
        "Fleetbus-Version": str(task.version),
        "Fleetbus-Digest": task.digest,
        "Fleetbus-Removed": "true" if task.removed else "false",
    }


def _unanswered(
    writes: Sequence[DesiredWrite], answers: Sequence[Reply | None]
) -> list[DesiredWrite]:
    """The writes without an answer, or answered that no stream serves them yet (503, as
    during a leader election); a refusal among the answers raises."""
    missing: list[DesiredWrite] = []
    for write, answer in zip(writes, answers, strict=True):
        if answer is None or answer.status == "503":
            missing.append(write)
        else:
            _check_ack(answer, write.subject)
    return missing


def _check_ack(reply: Reply, subject: str) -> None:
    if reply.status == "503":
        raise DesiredWriteFailed(f"no stream answered for {subject} (503)")
    try:
        ack = orjson.loads(reply.data)
    except orjson.JSONDecodeError as e:
        raise DesiredWriteFailed(f"unreadable acknowledgement for {subject}") from e
    if not isinstance(ack, dict) or ack.get("error") or "seq" not in ack:
        raise DesiredWriteFailed(f"write to {subject} refused: {ack!r}")
