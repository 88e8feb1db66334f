"""The scheduler's NATS adapter: DESIRED writes and scans, durable readers, the leader lease.

This is the only module of `scheduler` that imports nats; its errors leave it translated.

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
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import api as js_api

from events.catalog import Event
from events.connection import request
from events.errors import EventLogError, EventLogUnavailable, UndecodableEvent
from events.pull import ContinuousPull, PullSettings
from events.replies import PendingReplies
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


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message from a durable consumer, decoded, with what is needed to acknowledge it."""

    stream: str
    seq: int
    subject: str
    stored_at: datetime
    event: Event | None
    headers: dict[str, str] | None
    msg: Msg

    async def ack(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.msg.ack()


class SchedulerBus:
    def __init__(self, store: EventStore, *, timeout: float = 5.0) -> None:
        self.store = store
        self.api = store.api
        """The event store's connection as the scheduler's NATS adapter uses it."""
        self.nc = store.api.nc
        self.js = store.api.js
        self.timeout = timeout
        self.keys = store.sealer.keys if store.sealer is not None else None

    def _payload(self, write: DesiredWrite) -> bytes:
        """The ClusterTask as DESIRED holds it: sealed with the cluster's own data key, its
        subject as associated data (so it opens nowhere else), when the hub has a keyring."""
        payload = encode_cluster_task(write.task)
        if self.keys is None:
            return payload
        scope = cluster_scope(write.task.cluster)
        return seal_bytes(self.keys, scope, payload, write.subject.encode())

    async def _request(self, subject: str, payload: bytes, headers: dict[str, str]) -> Msg:
        return await request(self.nc, subject, payload, headers, reply_within=self.timeout)

    # --- DESIRED ----------------------------------------------------------------------------

    async def write_desired(self, write: DesiredWrite) -> None:
        reply = await self._request(write.subject, self._payload(write), _desired_headers(write))
        _check_ack(reply, write.subject)

    async def write_desired_many(
        self, writes: Sequence[DesiredWrite], *, window: int = DESIRED_WINDOW
    ) -> None:
        """Write many ClusterTasks (one subject each), pipelined: up to `window` in flight.

        One round trip per write is what a decision over thousands of clusters cannot afford;
        here the writes go out back to back and their acknowledgements come back on one
        subscription. A write without a good answer in time is written again alone through
        `write_desired` (its message id makes a repeat harmless); a refusal raises there."""
        if not writes:
            return
        if isinstance(self.keys, KeyProvisioning):
            # New clusters' data keys made in one keyring write, not one per cluster.
            self.keys.ensure({cluster_scope(write.task.cluster) for write in writes})
        async with PendingReplies(self.nc, f"write {DESIRED_STREAM}") as replies:
            for start in range(0, len(writes), window):
                waiting: dict[int, asyncio.Future[Msg]] = {}
                for index in range(start, min(start + window, len(writes))):
                    write = writes[index]
                    reply, waiting[index] = replies.expect(index)
                    try:
                        await self.nc.publish(
                            write.subject,
                            self._payload(write),
                            reply=reply,
                            headers=_desired_headers(write),
                        )
                    except nats.errors.Error as e:
                        raise EventLogUnavailable(f"cannot write {write.subject}: {e}") from e
                await asyncio.wait(waiting.values(), timeout=self.timeout)
                for index, future in waiting.items():
                    write = writes[index]
                    if future.done():
                        try:
                            _check_ack(future.result(), write.subject)
                            continue
                        except DesiredWriteFailed:
                            pass  # written again alone: a refusal raises there, with its reason
                    else:
                        replies.forget(index)
                    await self.write_desired(write)

    async def stored_generations(self) -> dict[str, int]:
        """DESIRED subject -> generation of the ClusterTask it holds (headers only)."""
        info = await self.store.stream_info(DESIRED_STREAM)
        if int(info["state"]["messages"]) == 0:
            return {}
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=js_api.AckPolicy.NONE,
            headers_only=True,
            inactive_threshold=30.0,
        )
        generations: dict[str, int] = {}
        try:
            sub = await self.js.pull_subscribe(">", stream=DESIRED_STREAM, config=config)
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot scan {DESIRED_STREAM}: {e}") from e
        try:
            while True:
                try:
                    msgs = await sub.fetch(1000, timeout=self.timeout)
                except (nats.errors.TimeoutError, TimeoutError):
                    break
                pending = 1
                for msg in msgs:
                    generation = (msg.headers or {}).get("Fleetbus-Generation")
                    if generation is not None:
                        generations[msg.subject] = int(generation)
                    pending = msg.metadata.num_pending
                if pending == 0:
                    break
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot scan {DESIRED_STREAM}: {e}") from e
        finally:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await sub.unsubscribe()
        return generations

    async def purge_cluster(self, cluster: str) -> None:
        """Drop every ClusterTask of a deregistered cluster from DESIRED."""
        await self.store.api_request(
            f"STREAM.PURGE.{DESIRED_STREAM}", {"filter": desired_filter(cluster)}
        )

    # --- durable readers --------------------------------------------------------------------

    async def deliveries(
        self, stream: str, durable: str, start_seq: int, stop: asyncio.Event
    ) -> AsyncIterator[list[Delivered]]:
        """Batches from durable `durable` on `stream`, created at `start_seq` if it is new."""
        config = js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_wait=120.0,
            max_ack_pending=20000,
        )
        try:
            try:
                await self.js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                await self.js.add_consumer(stream, config)
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot consume {stream} as {durable}: {e}") from e
        pull = ContinuousPull(
            self.nc,
            api_prefix=self.api.prefix,
            stream=stream,
            durable=durable,
            settings=PullSettings(batch=500),
        )
        batches = pull.batches()
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                received = asyncio.ensure_future(anext(batches))
                await asyncio.wait({received, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not received.done():
                    await cancel_and_wait([received])
                    return
                yield [self._decode(stream, msg) for msg in received.result()]
        finally:
            stopped.cancel()
            await batches.aclose()

    def _decode(self, stream: str, msg: Msg) -> Delivered:
        meta = msg.metadata
        try:
            event: Event | None = self.store.decoder.decode(
                msg.data, seq=meta.sequence.stream, subject=msg.subject
            )
        except UndecodableEvent as bad:
            log.warning("skipping undecodable message %s on %s: %s", bad.seq, stream, bad.reason)
            event = None
        return Delivered(
            stream=stream,
            seq=meta.sequence.stream,
            subject=msg.subject,
            stored_at=meta.timestamp,
            event=event,
            headers=dict(msg.headers) if msg.headers else None,
            msg=msg,
        )

    # --- the lease --------------------------------------------------------------------------

    async def ensure_lease_stream(self) -> None:
        await self.store.ensure_stream(leases_stream())

    async def lease_holder(self) -> tuple[int, str]:
        """(sequence, holder) of the current lease message, (0, "") when nobody holds it."""
        reply = await self._request(
            f"{self.api.prefix}.DIRECT.GET.{LEASES_STREAM}",
            orjson.dumps({"last_by_subj": LEASE_SUBJECT}),
            {},
        )
        headers = reply.headers or {}
        if headers.get("Status") == "404":
            return 0, ""
        if headers.get("Status") not in (None, "200"):
            raise EventLogUnavailable(f"lease lookup: status {headers.get('Status')}")
        body: dict[str, Any] = orjson.loads(reply.data)
        return int(headers.get("Nats-Sequence", "0")), str(body.get("holder", ""))

    async def write_lease(self, holder: str, expected: int, ttl_s: int) -> int:
        """Compare-and-set the lease; the new sequence, or LeaseLost if someone else wrote."""
        headers = {
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            "Nats-TTL": f"{ttl_s}s",
        }
        reply = await self._request(LEASE_SUBJECT, orjson.dumps({"holder": holder}), headers)
        try:
            ack = orjson.loads(reply.data)
        except orjson.JSONDecodeError as e:
            raise SchedulerError(f"unreadable lease acknowledgement: {reply.data!r}") from e
        error = ack.get("error") if isinstance(ack, dict) else None
        if error:
            if int(error.get("err_code", 0)) in (10071, 10164):
                raise LeaseLost(f"the scheduler lease changed hands ({error.get('description')})")
            raise SchedulerError(f"lease write refused: {error.get('description')}")
        return int(ack["seq"])

    async def release_lease(self, seq: int) -> None:
        with contextlib.suppress(EventLogError):
            await self.store.api_request(f"STREAM.MSG.DELETE.{LEASES_STREAM}", {"seq": seq})


def _desired_headers(write: DesiredWrite) -> dict[str, str]:
    task = write.task
    return {
        "Nats-Msg-Id": write.msg_id,
        "Fleetbus-Generation": str(task.generation),
        "Fleetbus-Version": str(task.version),
        "Fleetbus-Digest": task.digest,
        "Fleetbus-Removed": "true" if task.removed else "false",
    }


def _check_ack(reply: Msg, subject: str) -> None:
    if reply.headers and reply.headers.get("Status") == "503":
        raise DesiredWriteFailed(f"no stream answered for {subject} (503)")
    try:
        ack = orjson.loads(reply.data)
    except orjson.JSONDecodeError as e:
        raise DesiredWriteFailed(f"unreadable acknowledgement for {subject}") from e
    if not isinstance(ack, dict) or ack.get("error") or "seq" not in ack:
        raise DesiredWriteFailed(f"write to {subject} refused: {ack!r}")
