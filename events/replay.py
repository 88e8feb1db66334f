"""Reads of the log: replays from a sequence or a time, and `follow` for what comes next.

What a stream already holds comes through a short-lived pull consumer in large batches (the
next batch is requested while one is decoded); a replay ends at the last message the stream
held when it began. Only the tail of a `follow`, and reads of streams without direct gets, use
an ordered push consumer. Bytes that are not a valid event are reported with their sequence;
readers skip them when asked and never crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import api as js_api

from events.archive_store import ArchiveStore
from events.catalog import Event
from events.codec import EventDecoder
from events.errors import EventLogError, EventLogUnavailable, UndecodableEvent
from events.stream_api import StreamApi
from events.streams import EVENTS_STREAM

log = logging.getLogger(__name__)

_RawStored = tuple[int, str, datetime, bytes, dict[str, str] | None]
"""A stored message before decoding: seq, subject, stored_at, data, headers."""

NANOS_PER_SECOND = 1_000_000_000

REPLAY_BATCH = 5000
"""Messages per pull request of a replay."""
REPLAY_BATCH_BYTES = 16 * 1024 * 1024
"""Bytes per pull request of a replay (twice the largest message): bounds a replay's memory."""
FIRST_PULL_WITHIN_S = 30.0
"""How long a replay asks again when its first pull request finds no consumer answering."""
FIRST_PULL_PAUSE_S = 0.1
FIRST_PULL_MAX_PAUSE_S = 1.0
REPLAY_IDLE_S = 300
"""A replay's consumer outlives a reader that stops pulling by this long (it is deleted when the
read ends; this only cleans up after a reader that died)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it: with its stream sequence, subject and storage time."""

    seq: int
    subject: str
    stored_at: datetime
    event: Event
    headers: dict[str, str] | None = None


class Reader:
    """The read half of `events.store.EventStore` (see the module docstring)."""

    api: StreamApi
    decoder: EventDecoder

    def read(
        self,
        *,
        from_seq: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        subject: str | None = None,
        skip_undecodable: bool = False,
        on_undecodable: Callable[[UndecodableEvent], None] | None = None,
    ) -> AsyncGenerator[StoredEvent, None]:
        """Replay the log from a sequence or a time up to what it held when the read began."""
        return self._consume(
            from_seq=from_seq,
            since=since,
            until=until,
            subject=subject,
            follow=False,
            skip_undecodable=skip_undecodable,
            on_undecodable=on_undecodable,
        )

    def follow(
        self,
        *,
        from_seq: int | None = None,
        since: datetime | None = None,
        subject: str | None = None,
        skip_undecodable: bool = False,
        on_undecodable: Callable[[UndecodableEvent], None] | None = None,
    ) -> AsyncGenerator[StoredEvent, None]:
        """Replay like `read`, then keep yielding new events as they are appended."""
        return self._consume(
            from_seq=from_seq,
            since=since,
            until=None,
            subject=subject,
            follow=True,
            skip_undecodable=skip_undecodable,
            on_undecodable=on_undecodable,
        )

    def read_stored(
        self, *, from_seq: int, to_seq: int
    ) -> AsyncGenerator[list[tuple[int, str, datetime, bytes, dict[str, str] | None]], None]:
        """The live log's messages `from_seq`..`to_seq` as stored, undecoded, in batches of
        (seq, subject, stored_at, data, headers): what an archive segment keeps."""
        return self._replay_pulled(from_seq=from_seq, since=None, subject=None, end_seq=to_seq)

    async def _consume(
        self,
        *,
        from_seq: int | None,
        since: datetime | None,
        until: datetime | None,
        subject: str | None,
        follow: bool,
        skip_undecodable: bool,
        on_undecodable: Callable[[UndecodableEvent], None] | None,
    ) -> AsyncGenerator[StoredEvent, None]:
        info = await self.api.stream_info()
        state = info["state"]
        end_seq = int(state["last_seq"])
        if self._reaches_into_archive(state, from_seq, since):
            # The live log starts later than the read: the archive serves the start, then the
            # live log goes on after the archive's last sequence. Should the archiver have
            # archived and purged more while the archive was read, the archive serves that too.
            archive = ArchiveStore(self.api)
            while True:
                segments = await archive.listing()
                if not segments or segments[-1].to_seq < (from_seq or 1):
                    break
                archived = archive.messages(
                    segments,
                    from_seq=from_seq,
                    since=since,
                    until=until,
                    subject=subject,
                    to_seq=end_seq,
                )
                async with contextlib.aclosing(archived):
                    async for message in archived:
                        stored = self._stored_event(
                            message.seq,
                            message.subject,
                            message.stored_at,
                            message.data,
                            message.headers,
                            skip_undecodable,
                            on_undecodable,
                        )
                        if stored is not None:
                            yield stored
                last_time = segments[-1].last_time
                if until is not None and last_time is not None and last_time > until:
                    return
                from_seq = max(from_seq or 1, segments[-1].to_seq + 1)
                since = None
                if from_seq > end_seq:
                    if not follow:
                        return
                    break
                state = (await self.api.stream_info())["state"]
                if int(state["first_seq"]) <= from_seq:
                    break
        empty = int(state["messages"]) == 0 or (from_seq is not None and from_seq > end_seq)
        if empty and not follow:
            return
        tail_from = from_seq
        if not empty:
            # What the stream already holds comes in large pull batches; only the tail of a
            # follow needs a push consumer.
            replay = self._replay_pulled(
                from_seq=from_seq, since=since, subject=subject, end_seq=end_seq
            )
            async with contextlib.aclosing(replay):
                async for batch in replay:
                    for seq, subj, stored_at, data, headers in batch:
                        if until is not None and stored_at > until:
                            return
                        stored = self._stored_event(
                            seq, subj, stored_at, data, headers, skip_undecodable, on_undecodable
                        )
                        if stored is not None:
                            yield stored
            if not follow:
                return
            tail_from = max(end_seq + 1, from_seq or 0)
        tail = self._consume_ordered(
            from_seq=tail_from,
            since=since,
            until=until,
            subject=subject,
            follow=follow,
            end_seq=end_seq,
            skip_undecodable=skip_undecodable,
            on_undecodable=on_undecodable,
        )
        async with contextlib.aclosing(tail):
            async for stored in tail:
                yield stored

    def _reaches_into_archive(
        self, state: dict[str, Any], from_seq: int | None, since: datetime | None
    ) -> bool:
        """Whether a read from `from_seq` (or `since`) starts before the live log does."""
        if self.api.stream != EVENTS_STREAM:
            return False
        first_seq = int(state.get("first_seq", 1) or 1)
        if first_seq <= 1:
            return False
        if from_seq is not None:
            return from_seq < first_seq
        if since is not None and int(state["messages"]) > 0:
            first_ts = state.get("first_ts")
            return first_ts is None or since < datetime.fromisoformat(first_ts)
        return True

    def _stored_event(
        self,
        seq: int,
        subject: str,
        stored_at: datetime,
        data: bytes,
        headers: dict[str, str] | None,
        skip_undecodable: bool,
        on_undecodable: Callable[[UndecodableEvent], None] | None,
    ) -> StoredEvent | None:
        try:
            event = self.decoder.decode(data, seq=seq, subject=subject)
        except UndecodableEvent as bad:
            if not skip_undecodable:
                raise
            (on_undecodable or _log_undecodable)(bad)
            return None
        return StoredEvent(seq, subject, stored_at, event, headers)

    async def _replay_pulled(
        self,
        *,
        from_seq: int | None,
        since: datetime | None,
        subject: str | None,
        end_seq: int,
    ) -> AsyncGenerator[list[_RawStored], None]:
        """Batches of (seq, subject, stored_at, data, headers) of messages up to `end_seq`.

        A short-lived pull consumer (no acks, in memory) serves batches of `REPLAY_BATCH`;
        the next batch is requested as soon as one is complete, so the server sends it while
        this one is decoded. Stream sequence and storage time come from each message's reply
        subject, so only the message's own headers are parsed.

        Right after a node is lost the consumer may not answer yet (its stream's leader being
        elected): a first pull request answered 503 or not at all is asked again of a new
        consumer (nothing was read, so nothing is skipped or read twice) for up to
        `FIRST_PULL_WITHIN_S`; then the read fails naming the stream.
        """
        config: dict[str, Any] = {
            "ack_policy": "none",
            "inactive_threshold": REPLAY_IDLE_S * NANOS_PER_SECOND,
            "mem_storage": True,
            "num_replicas": 1,
        }
        if subject:
            config["filter_subject"] = subject
        if from_seq is not None:
            config["deliver_policy"] = "by_start_sequence"
            config["opt_start_seq"] = max(1, from_seq)
        elif since is not None:
            config["deliver_policy"] = "by_start_time"
            config["opt_start_time"] = _rfc3339(since)
        else:
            config["deliver_policy"] = "all"
        idle_timeout = self.api.timeout * 2
        consumer, first = await self._first_pull(config, subject, idle_timeout)
        pending: _PulledBatch | None = first
        try:
            while pending is not None:
                current, pending = pending, None
                if current.messages and current.last_seq < end_seq and current.more:
                    pending = await consumer.pull()
                batch: list[_RawStored] = []
                for msg in current.messages:
                    seq, nanos = _ack_position(msg.reply)
                    if seq > end_seq:
                        break
                    batch.append((seq, msg.subject, _from_nanos(nanos), msg.data, msg.headers))
                if batch:
                    yield batch
                if len(batch) < len(current.messages):
                    return
                if pending is not None:
                    await pending.wait(idle_timeout, self.api.stream)
        finally:
            await consumer.close()

    async def _first_pull(
        self, config: dict[str, Any], subject: str | None, idle_timeout: float
    ) -> tuple[_ReplayConsumer, _PulledBatch]:
        """A replay consumer and its first batch, complete (see `_replay_pulled`)."""
        stream = self.api.stream
        deadline = asyncio.get_running_loop().time() + FIRST_PULL_WITHIN_S
        pause = FIRST_PULL_PAUSE_S
        while True:
            consumer = _ReplayConsumer(self.api, config, subject)
            try:
                await consumer.open()
                first = await consumer.pull()
                await first.wait(idle_timeout, stream)
                return consumer, first
            except _NotAnswered as e:
                await consumer.close()
                if asyncio.get_running_loop().time() + pause > deadline:
                    raise EventLogUnavailable(
                        f"cannot read {stream}: still no consumer answering after "
                        f"{FIRST_PULL_WITHIN_S:.0f} s ({e}); is a majority of the NATS "
                        "cluster up?"
                    ) from e
                log.info("reading %s: %s; asking again", stream, e)
                await asyncio.sleep(pause)
                pause = min(pause * 2, FIRST_PULL_MAX_PAUSE_S)
            except BaseException:
                await consumer.close()
                raise

    async def _consume_ordered(
        self,
        *,
        from_seq: int | None,
        since: datetime | None,
        until: datetime | None,
        subject: str | None,
        follow: bool,
        end_seq: int,
        skip_undecodable: bool,
        on_undecodable: Callable[[UndecodableEvent], None] | None,
    ) -> AsyncGenerator[StoredEvent, None]:
        """An ordered push consumer: the tail of `follow`, and reads of non-direct streams."""
        config = js_api.ConsumerConfig(
            ack_policy=js_api.AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=30.0,
        )
        if from_seq is not None:
            config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(1, from_seq)
        elif since is not None:
            config.deliver_policy = js_api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = since.astimezone(UTC)
        else:
            config.deliver_policy = js_api.DeliverPolicy.ALL
        queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=4096)

        async def deliver(msg: Msg) -> None:
            await queue.put(msg)

        try:
            # While `deliver` waits for room in the queue, messages wait in the subscription;
            # flow control bounds them. A count limit would drop them silently instead.
            sub = await self.api.js.subscribe(
                subject or ">",
                stream=self.api.stream,
                ordered_consumer=True,
                config=config,
                cb=deliver,
                idle_heartbeat=2.0,
                pending_msgs_limit=0,
            )
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot read {self.api.stream}: {e}") from e
        try:
            if not follow and await _nothing_to_deliver(sub):
                return
            while True:
                if not follow:
                    try:
                        msg = await asyncio.wait_for(queue.get(), timeout=self.api.timeout * 2)
                    except TimeoutError:
                        # Nothing (more) matches the filter below the end of the stream.
                        return
                else:
                    msg = await queue.get()
                meta = msg.metadata
                seq = meta.sequence.stream
                stored_at = _stored_at(msg)
                if until is not None and stored_at > until:
                    return
                if since is None or stored_at >= since:
                    stored = self._stored_event(
                        seq,
                        msg.subject,
                        stored_at,
                        msg.data,
                        msg.headers,
                        skip_undecodable,
                        on_undecodable,
                    )
                    if stored is not None:
                        yield stored
                if not follow and (seq >= end_seq or meta.num_pending == 0):
                    return
        finally:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await sub.unsubscribe()


async def _nothing_to_deliver(sub: Any) -> bool:
    """True when a fresh consumer matched nothing: no message is pending or was delivered."""
    try:
        info = await sub.consumer_info()
    except (nats.errors.Error, nats.js.errors.Error):
        return False
    return int(info.num_pending or 0) == 0 and int(info.delivered.consumer_seq or 0) == 0


def _stored_at(msg: Msg) -> datetime:
    """The server's storage time of a consumed message, to the microsecond, rounded down.

    nats-py's own metadata divides nanoseconds as a float, which can round up past the
    true time; replays `since` a stored time must include that message, so use integers.
    """
    if not msg.reply:
        return msg.metadata.timestamp
    return _from_nanos(_ack_position(msg.reply)[1])


class _NotAnswered(EventLogUnavailable):
    """A pull request nobody answered: no responders (503), nothing for a while, or a
    consumer create the server could not serve yet (503)."""


class _ReplayConsumer:
    """One replay consumer and the inbox its batches arrive on."""

    def __init__(self, api: StreamApi, config: dict[str, Any], subject: str | None) -> None:
        self.api = api
        self.name = f"replay-{uuid.uuid4().hex[:20]}"
        self.config = {"name": self.name, **config}
        self.subject = subject
        self.inbox = api.nc.new_inbox()
        self.sub: Any = None
        self.created = False
        # One pull request is outstanding at a time, so whatever arrives on the inbox (the
        # messages keep their own subjects) belongs to the newest batch.
        self.receiving = _PulledBatch(REPLAY_BATCH)

    async def open(self) -> None:
        stream = self.api.stream
        create = f"{self.api.prefix}.CONSUMER.CREATE.{stream}.{self.name}"
        if self.subject:
            create += f".{self.subject}"
        body = orjson.dumps({"stream_name": stream, "config": self.config})
        answer = orjson.loads((await self.api.request(create, body, None)).data)
        if isinstance(answer, dict) and answer.get("error"):
            error = answer["error"]
            unavailable = _NotAnswered if error.get("code") == 503 else EventLogUnavailable
            raise unavailable(
                f"cannot read {stream}: {error.get('description')} (code {error.get('err_code')})"
            )
        self.created = True
        try:
            self.sub = await self.api.nc.subscribe(
                self.inbox, cb=self._collect, pending_msgs_limit=0, pending_bytes_limit=0
            )
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot read {stream}: {e}") from e

    async def _collect(self, msg: Msg) -> None:
        self.receiving.add(msg)

    async def pull(self) -> _PulledBatch:
        self.receiving = _PulledBatch(REPLAY_BATCH)
        body = {"batch": REPLAY_BATCH, "max_bytes": REPLAY_BATCH_BYTES, "no_wait": True}
        try:
            await self.api.nc.publish(
                f"{self.api.prefix}.CONSUMER.MSG.NEXT.{self.api.stream}.{self.name}",
                orjson.dumps(body),
                reply=self.inbox,
            )
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot read {self.api.stream}: {e}") from e
        return self.receiving

    async def close(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.sub.unsubscribe()
            self.sub = None
        if self.created:
            self.created = False
            with contextlib.suppress(EventLogError):
                await self.api.request(
                    f"{self.api.prefix}.CONSUMER.DELETE.{self.api.stream}.{self.name}",
                    b"",
                    None,
                    retry=False,
                )


class _PulledBatch:
    """The answer to one pull request of a replay, filled by the subscription callback."""

    __slots__ = ("done", "messages", "more", "received", "size", "status")

    def __init__(self, size: int) -> None:
        self.size = size
        self.messages: list[Msg] = []
        self.done = asyncio.Event()
        self.status = ""
        self.received = 0
        self.more = True

    def add(self, msg: Msg) -> None:
        self.received += 1
        if not msg.reply:
            # A status ends the request: 404 nothing (more) to deliver now, 408 expired,
            # 409 with messages: the byte budget of the request is used up.
            self.status = (msg.headers or {}).get("Status", "")
            self.more = self.status == "409"
            self.done.set()
            return
        self.messages.append(msg)
        if len(self.messages) >= self.size:
            self.done.set()

    @property
    def last_seq(self) -> int:
        return _ack_position(self.messages[-1].reply)[0] if self.messages else 0

    async def wait(self, idle_timeout: float, stream: str) -> None:
        """Until the batch is complete; fails when nothing arrived for `idle_timeout`."""
        while True:
            seen = self.received
            try:
                await asyncio.wait_for(self.done.wait(), idle_timeout)
            except TimeoutError:
                if self.received == seen:
                    raise _NotAnswered(
                        f"reading {stream}: no answer for {idle_timeout:.0f} s"
                    ) from None
                continue
            if self.status in ("", "404", "408") or (self.status == "409" and self.messages):
                return
            if self.status == "503" and not self.messages:
                raise _NotAnswered(f"reading {stream}: pull request answered 503 (no responders)")
            raise EventLogUnavailable(f"reading {stream}: pull request answered {self.status}")


def _ack_position(reply: str) -> tuple[int, int]:
    """(stream sequence, storage time in ns) from a JetStream message's reply subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`, or the form with
    domain and account hash after `ACK` (and possibly a trailing token).
    """
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    return int(tokens[base + 3]), int(tokens[base + 5])


def _from_nanos(nanos: int) -> datetime:
    """A storage time in ns as a UTC datetime, rounded down to the µs (see `_stored_at`)."""
    seconds, rest = divmod(nanos, NANOS_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _log_undecodable(bad: UndecodableEvent) -> None:
    log.warning("skipping undecodable message", extra={"seq": bad.seq, "reason": bad.reason})
