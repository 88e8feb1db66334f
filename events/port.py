"""Named JetStream operations for the components that need more than appends and replays.

The scheduler writes and scans DESIRED, reads EVENTS and REPORTS through durable consumers and
holds a lease; anti-entropy reads one cluster's slice of DESIRED, re-writes single subjects
and listens to inventory digests. `JetStreamPort` gives them those operations by name, on the
event store's connection, with answers as plain values (`Reply`, `Received`): no component
outside `events` holds a NATS client or a JetStream context, and every NATS error leaves here
as `EventLogUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import api as js_api

from events.connection import request
from events.errors import AppendRefused, EventLogUnavailable, TooManyResults
from events.pull import ContinuousPull, PullSettings
from events.replies import PendingReplies
from events.stream_api import StreamApi

SCAN_BATCH = 1000
"""Messages one fetch of a headers-only scan asks for."""
MAX_DIRECT_RESULTS = 1024
"""The most messages nats-server answers to one batched direct get: more matches are refused
whole with status 413 (`TOO_MANY_RESULTS`), whatever `batch` says (checked on 2.15.1)."""
TOO_MANY_RESULTS = "413"


@dataclass(frozen=True, slots=True)
class Reply:
    """A JetStream answer: its headers (with `Status` for a control answer) and body."""

    headers: dict[str, str]
    data: bytes

    @property
    def status(self) -> str | None:
        return self.headers.get("Status")

    def json(self) -> Any:
        """The body as JSON; `EventLogUnavailable` when it is not."""
        try:
            return orjson.loads(self.data) if self.data else {}
        except orjson.JSONDecodeError as e:
            raise EventLogUnavailable(f"unreadable JetStream answer: {self.data[:200]!r}") from e


def _reply(msg: Msg) -> Reply:
    return Reply(headers=dict(msg.headers or {}), data=msg.data)


@dataclass(frozen=True, slots=True)
class Received:
    """A message from a durable consumer, with the one thing to do with it after: `ack`."""

    stream: str
    seq: int
    subject: str
    stored_at: datetime
    data: bytes
    headers: dict[str, str] | None
    ack: Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of a pipelined write."""

    subject: str
    payload: bytes
    headers: dict[str, str]


class Pipeline:
    """Requests published back to back, their answers collected on one subscription."""

    def __init__(self, port: JetStreamPort, replies: PendingReplies) -> None:
        self._port = port
        self._replies = replies
        self._next = 0

    async def send(self, messages: Sequence[Outgoing], within: float) -> list[Reply | None]:
        """Publish `messages` and wait up to `within` seconds for their answers; each answer
        in the order of `messages`, None where none came in time."""
        waiting: list[tuple[int, asyncio.Future[Msg]]] = []
        nc = self._port.api.nc
        for message in messages:
            key = self._next
            self._next += 1
            reply, future = self._replies.expect(key)
            waiting.append((key, future))
            try:
                await nc.publish(
                    message.subject, message.payload, reply=reply, headers=message.headers
                )
            except nats.errors.Error as e:
                raise EventLogUnavailable(f"cannot write {message.subject}: {e}") from e
        if waiting:
            await asyncio.wait([future for _, future in waiting], timeout=within)
        answers: list[Reply | None] = []
        for key, future in waiting:
            if future.done() and not future.cancelled():
                answers.append(_reply(future.result()))
            else:
                self._replies.forget(key)
                answers.append(None)
        return answers


class JetStreamPort:
    """The operations named above, on the connection and API prefix of `api`."""

    def __init__(self, api: StreamApi, *, timeout: float | None = None) -> None:
        self.api = api
        self.timeout = api.timeout if timeout is None else timeout

    # --- single requests ----------------------------------------------------------------------

    async def request(self, subject: str, payload: bytes, headers: dict[str, str]) -> Reply:
        """A request (a publish into a stream, an API call) with the store's bounded retries."""
        msg = await request(self.api.nc, subject, payload, headers, reply_within=self.timeout)
        return _reply(msg)

    async def request_once(self, subject: str, payload: bytes, headers: dict[str, str]) -> Reply:
        """A request sent exactly once (a conditional write whose repeat would mean another
        thing)."""
        try:
            msg = await self.api.nc.request(subject, payload, timeout=self.timeout, headers=headers)
        except (nats.errors.Error, TimeoutError) as e:
            raise EventLogUnavailable(f"request on {subject} failed: {e!r}") from e
        return _reply(msg)

    @contextlib.asynccontextmanager
    async def pipeline(self, purpose: str) -> AsyncIterator[Pipeline]:
        """Many writes in flight at once (see `Pipeline.send`)."""
        async with PendingReplies(self.api.nc, purpose) as replies:
            yield Pipeline(self, replies)

    # --- reading a stream by subject -----------------------------------------------------------

    async def last_message(self, stream: str, subject: str) -> Reply | None:
        """The newest message on `subject` in `stream` (a direct get), None if there is none."""
        reply = await self.request(
            f"{self.api.prefix}.DIRECT.GET.{stream}", orjson.dumps({"last_by_subj": subject}), {}
        )
        if reply.status == "404":
            return None
        if reply.status not in (None, "200"):
            raise EventLogUnavailable(
                f"direct get of {subject} in {stream}: status {reply.status} "
                f"{reply.headers.get('Description', '')}"
            )
        return reply

    async def last_per_subject(
        self, stream: str, subject_filter: str | Sequence[str], batch: int
    ) -> list[Reply]:
        """The newest message of each subject under `subject_filter` (one filter or several;
        one batched direct get of at most `batch` messages), each with its `Nats-Subject`,
        `Nats-Sequence` and `Nats-Time-Stamp` headers."""
        filters = [subject_filter] if isinstance(subject_filter, str) else list(subject_filter)
        what = filters[0] if len(filters) == 1 else f"{len(filters)} subject filters"
        return await self._direct_batch(stream, {"multi_last": filters, "batch": batch}, what)

    async def messages_from(
        self, stream: str, subject_filter: str, from_seq: int, batch: int
    ) -> list[Reply]:
        """Up to `batch` messages under `subject_filter` from sequence `from_seq` on, in
        stream order (one batched direct get; page on with the last `Nats-Sequence` + 1)."""
        body = {"seq": max(1, from_seq), "next_by_subj": subject_filter, "batch": batch}
        return await self._direct_batch(stream, body, subject_filter)

    async def _direct_batch(self, stream: str, body: dict[str, Any], what: str) -> list[Reply]:
        inbox = self.api.nc.new_inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            await queue.put(msg)

        found: list[Reply] = []
        try:
            sub = await self.api.nc.subscribe(inbox, cb=collect)
            try:
                await self.api.nc.publish(
                    f"{self.api.prefix}.DIRECT.GET.{stream}", orjson.dumps(body), reply=inbox
                )
                while True:
                    reply = _reply(await asyncio.wait_for(queue.get(), self.timeout))
                    if reply.status in ("204", "404"):
                        break  # end of the batch / nothing under the filter
                    if reply.status == TOO_MANY_RESULTS:
                        raise TooManyResults(
                            f"direct get of {what} in {stream} matches more than "
                            f"{MAX_DIRECT_RESULTS} messages"
                        )
                    if reply.status is not None:
                        raise EventLogUnavailable(
                            f"direct get of {what} in {stream}: status "
                            f"{reply.status} {reply.headers.get('Description', '')}"
                        )
                    found.append(reply)
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        except TimeoutError as e:
            raise EventLogUnavailable(f"no answer reading {what} in {stream}") from e
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"reading {what} in {stream} failed: {e}") from e
        return found

    async def last_headers_per_subject(
        self, stream: str, subject_filter: str = ">"
    ) -> dict[str, dict[str, str]]:
        """Subject -> headers of its newest message, for every subject of `stream` under
        `subject_filter`; bodies are never transferred (a headers-only ephemeral consumer)."""
        info = await self.api.stream_info(stream)
        if int(info["state"]["messages"]) == 0:
            return {}
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=js_api.AckPolicy.NONE,
            headers_only=True,
            inactive_threshold=30.0,
        )
        found: dict[str, dict[str, str]] = {}
        try:
            sub = await self.api.js.pull_subscribe(subject_filter, stream=stream, config=config)
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot scan {stream}: {e}") from e
        try:
            while True:
                try:
                    msgs = await sub.fetch(SCAN_BATCH, timeout=self.timeout)
                except (nats.errors.TimeoutError, TimeoutError):
                    break
                pending = 1
                for msg in msgs:
                    found[msg.subject] = dict(msg.headers or {})
                    pending = msg.metadata.num_pending
                if pending == 0:
                    break
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot scan {stream}: {e}") from e
        finally:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await sub.unsubscribe()
            # Unsubscribing leaves the consumer on the server until its inactive threshold:
            # delete it, so it is not listed beside the stream's durables in the meantime.
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await self.api.js.delete_consumer(stream, str(config.name))
        return found

    async def stream_info(self, stream: str) -> dict[str, Any] | None:
        """The stream's info (config and state), None when there is no such stream."""
        reply = await self.request(f"{self.api.prefix}.STREAM.INFO.{stream}", b"", {})
        answer = reply.json()
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            if int(error.get("err_code", 0)) == 10059:  # stream not found
                return None
            raise EventLogUnavailable(f"stream info of {stream}: {error.get('description')}")
        info: dict[str, Any] = answer
        return info

    # --- removing messages -------------------------------------------------------------------

    async def purge(self, stream: str, subject_filter: str) -> None:
        """Remove every message of `stream` under `subject_filter`."""
        await self.api.api_request(f"STREAM.PURGE.{stream}", {"filter": subject_filter})

    async def delete_message(self, stream: str, seq: int) -> None:
        """Remove message `seq` of `stream`; a message already gone is not an error, a stream
        that does not answer is (`EventLogUnavailable`)."""
        with contextlib.suppress(AppendRefused):
            await self.api.api_request(f"STREAM.MSG.DELETE.{stream}", {"seq": seq})

    # --- durable consumers -------------------------------------------------------------------

    async def ensure_durable(
        self,
        stream: str,
        durable: str,
        *,
        start_seq: int,
        ack_wait: float,
        max_ack_pending: int,
    ) -> None:
        """Create durable `durable` on `stream` starting at `start_seq`, unless it exists (an
        existing one keeps its position)."""
        config = js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_seq),
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
        )
        try:
            try:
                await self.api.js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                await self.api.js.add_consumer(stream, config)
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot consume {stream} as {durable}: {e}") from e

    async def durable_batches(
        self, stream: str, durable: str, settings: PullSettings
    ) -> AsyncGenerator[list[Received], None]:
        """Batches from durable `durable` as they arrive (see `events.pull.ContinuousPull`)."""
        pull = ContinuousPull(
            self.api.nc,
            api_prefix=self.api.prefix,
            stream=stream,
            durable=durable,
            settings=settings,
        )
        batches = pull.batches()
        try:
            async for batch in batches:
                yield [_received(stream, msg) for msg in batch]
        finally:
            await batches.aclose()

    # --- core subscriptions ------------------------------------------------------------------

    async def message_batches(
        self, subject: str, *, backlog: int, most: int
    ) -> AsyncGenerator[list[tuple[str, bytes]], None]:
        """Like `messages`, but each time everything already waiting, up to `most` at once
        (never empty): a reader that works in bulk catches up with one step per batch."""
        queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=backlog)

        async def deliver(msg: Msg) -> None:
            if not queue.full():
                queue.put_nowait(msg)

        try:
            sub = await self.api.nc.subscribe(subject, cb=deliver)
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot subscribe to {subject}: {e}") from e
        try:
            while True:
                received = [await queue.get()]
                while len(received) < most and not queue.empty():
                    received.append(queue.get_nowait())
                yield [(msg.subject, msg.data) for msg in received]
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def messages(self, subject: str, *, backlog: int) -> AsyncIterator[tuple[str, bytes]]:
        """(subject, payload) of every message on `subject` (a core subscription), forever;
        beyond `backlog` waiting messages new ones are dropped."""
        async with contextlib.aclosing(
            self.message_batches(subject, backlog=backlog, most=1)
        ) as batches:
            async for batch in batches:
                for message in batch:
                    yield message


def _received(stream: str, msg: Msg) -> Received:
    meta = msg.metadata

    async def ack() -> None:
        with contextlib.suppress(nats.errors.Error):
            await msg.ack()

    return Received(
        stream=stream,
        seq=meta.sequence.stream,
        subject=msg.subject,
        stored_at=meta.timestamp,
        data=msg.data,
        headers=dict(msg.headers) if msg.headers else None,
        ack=ack,
    )
