"""The event store: the JetStream adapter behind every append to and read from the log.

Appends are conditional and idempotent. Each event goes to its aggregate's subject with
`Nats-Msg-Id` = event id (a retried append is stored once) and, when the caller knows the
aggregate's version, `Nats-Expected-Last-Subject-Sequence` (a stale write is refused and raised
as `ConcurrencyConflict`). The events of one command are appended as one atomic batch
(`Nats-Batch-*` headers, stream `allow_atomic`): the server stores all of them or none, so the
log never holds half a command.

Reads are ordered consumers that start at a sequence or a time and end at the last message the
stream held when the read began; `follow()` keeps going. This is the only module of `events`
that speaks NATS; its errors never leave it untranslated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api as js_api
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from events.catalog import Event
from events.codec import EventDecoder, encode_event
from events.errors import (
    AppendRefused,
    ConcurrencyConflict,
    EventLogError,
    EventLogUnavailable,
    PayloadTooLarge,
    UndecodableEvent,
)
from events.streams import EVENTS_STREAM, MANAGED_ELSEWHERE, MAX_PAYLOAD

log = logging.getLogger(__name__)

MAX_BATCH = 1000
"""The server's limit on messages in one atomic batch."""
MAX_BATCHES_IN_FLIGHT = 32
"""Atomic batches `append_many` keeps open at once (the server allows 50 per stream)."""
APPEND_WINDOW = 2048
"""Messages `append_many` keeps in flight before it waits for their answers."""

_RawStored = tuple[int, str, datetime, bytes, dict[str, str] | None]
"""A stored message before decoding: seq, subject, stored_at, data, headers."""

NANOS_PER_SECOND = 1_000_000_000

REPLAY_BATCH = 5000
"""Messages per pull request of a replay."""
REPLAY_BATCH_BYTES = 16 * 1024 * 1024
"""Bytes per pull request of a replay (twice the largest message): bounds a replay's memory."""
REPLAY_IDLE_S = 300
"""A replay's consumer outlives a reader that stops pulling by this long (it is deleted when the
read ends; this only cleans up after a reader that died)."""

CONFLICT_CODES = frozenset({10071, 10164})
"""Wrong last sequence; and its form inside an atomic batch."""
BATCH_INCOMPLETE = 10176
"""An atomic batch the server did not take in whole (e.g. too many batches were open)."""
DUPLICATE_IN_BATCH = 10201
"""An atomic batch carries a message id the stream already holds: a retried command."""

_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the log holds it: with its stream sequence, subject and storage time."""

    seq: int
    subject: str
    stored_at: datetime
    event: Event
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    sequences: list[int]
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Append:
    """One command's events for `append_many`: appended all or nothing, like `append`."""

    events: Sequence[Event]
    expected: int | None = None


_ANY_SPACE = re.compile(r"\s")
_HEADER_SPACE = " \t\r\n\x0b\x0c"
"""What `bytes.strip()` strips: nats-py's parser strips exactly these around names and values."""


class _Client(NatsClient):
    """nats-py's client with a header parser that costs one regex pass per message.

    Replays read every message with its headers (a direct get carries six of its own), and
    nats-py's line-by-line parser, which scans each name for whitespace one character at a
    time, was most of the cost of a replay. Well-formed headers give the same dict: names that
    are not tokens are skipped, values are stripped and decoded as UTF-8 with replacement.
    """

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        return parse_header_lines(raw)


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """The header block of a NATS message (`Name: value` lines) as a dict.

    Names must be ASCII without whitespace; other lines are skipped.
    """
    headers: dict[str, str] = {}
    names = _HEADER_NAMES
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        raw_name, colon, value = line.partition(":")
        if colon:
            name = names[raw_name] if raw_name in names else _header_name(raw_name)
            if name is not None:
                headers[name] = value.strip(_HEADER_SPACE)
    return headers


_HEADER_NAMES: dict[str, str | None] = {}
"""Header names as written on the wire → the name, or None for an invalid one. The same few
names come with every message; the cache stops growing at 1,024 entries."""


def _header_name(raw_name: str) -> str | None:
    name = raw_name.strip(_HEADER_SPACE)
    valid = name if name.isascii() and _ANY_SPACE.search(name) is None else None
    if len(_HEADER_NAMES) < 1024:
        _HEADER_NAMES[raw_name] = valid
    return valid


async def connect(
    url: str | list[str],
    *,
    name: str = "fleetbus",
    user: str | None = None,
    password: str | None = None,
    tls: Any = None,
    inbox_prefix: str | None = None,
    max_reconnect_attempts: int = -1,
    connect_timeout: float = 5.0,
) -> NatsClient:
    """Connect to NATS for a long-lived fleetbus process (reconnects forever by default)."""
    options: dict[str, Any] = {
        "servers": url if isinstance(url, list) else [url],
        "name": name,
        "max_reconnect_attempts": max_reconnect_attempts,
        "reconnect_time_wait": 0.5,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "error_cb": _connection_trouble,
    }
    if user is not None:
        options["user"] = user
        options["password"] = password
    if tls is not None:
        options["tls"] = tls
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    client = _Client()
    try:
        await client.connect(**options)
    except (TimeoutError, nats.errors.Error, OSError) as e:
        raise EventLogUnavailable(f"cannot connect to NATS at {url}: {e}") from e
    return client


async def _connection_trouble(error: Exception) -> None:
    """nats-py reports every failed (re)connect attempt here. The reconnect logic handles them
    and `connect` raises one clear error when it gives up, so they are no user's business: its
    default logs each with a traceback, which would end up on a CLI user's terminal."""
    log.debug("NATS connection trouble: %s", error)


class EventStore:
    """Append events to and read them from one stream of the hub (EVENTS by default)."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        stream: str = EVENTS_STREAM,
        domain: str | None = None,
        timeout: float = 5.0,
        attempts: int = 5,
        decoder: EventDecoder | None = None,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.domain = domain
        self.api_prefix = f"$JS.{domain}.API" if domain else "$JS.API"
        self.timeout = timeout
        self.attempts = attempts
        self.decoder = decoder or EventDecoder()
        self.js = nc.jetstream(domain=domain, timeout=timeout)

    async def close(self) -> None:
        """Drain and close the connection (pending appends complete first)."""
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await self.nc.drain()

    # --- administration -------------------------------------------------------------------

    async def api_request(self, subject: str, body: dict[str, Any] | None = None) -> Any:
        """One JetStream API request; errors come back as `AppendRefused`/`EventLogUnavailable`."""
        payload = orjson.dumps(body) if body is not None else b""
        reply = await self._request(f"{self.api_prefix}.{subject}", payload, None)
        answer = orjson.loads(reply.data)
        if isinstance(answer, dict) and answer.get("error"):
            err = answer["error"]
            raise AppendRefused(
                f"JetStream API {subject}: {err.get('description')} (code {err.get('err_code')})"
            )
        return answer

    async def ensure_stream(self, config: dict[str, Any], *, keep: Sequence[str] = ()) -> None:
        """Create the stream, or bring an existing one to `config`. Idempotent.

        The fields named in `keep` keep an existing stream's values (another component
        manages them), whatever `config` says."""
        name = config["name"]
        reply = await self._request(
            f"{self.api_prefix}.STREAM.CREATE.{name}", orjson.dumps(config), None
        )
        answer = orjson.loads(reply.data)
        error = answer.get("error") if isinstance(answer, dict) else None
        if not error:
            return
        if error.get("err_code") == 10058:  # stream name already in use (config differs)
            if keep:
                current = (await self.stream_info(name))["config"]
                config = {key: value for key, value in config.items() if key not in keep}
                config |= {key: current[key] for key in keep if key in current}
            await self.api_request(f"STREAM.UPDATE.{name}", config)
            return
        raise AppendRefused(f"cannot create stream {name}: {error.get('description')}")

    async def ensure_streams(
        self,
        configs: Sequence[dict[str, Any]],
        *,
        keep: Mapping[str, Sequence[str]] = MANAGED_ELSEWHERE,
    ) -> None:
        """`ensure_stream` for each config; `keep` names, per stream, the fields to keep."""
        for config in configs:
            await self.ensure_stream(config, keep=keep.get(config["name"], ()))

    async def stream_info(self, stream: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = await self.api_request(f"STREAM.INFO.{stream or self.stream}")
        return info

    async def last_sequence(self) -> int:
        """The sequence of the newest message in the stream (0 when empty)."""
        info = await self.stream_info()
        return int(info["state"]["last_seq"])

    async def subject_version(self, subject: str) -> int:
        """The stream sequence of the last message on `subject`, 0 if there is none.

        This is the `expected` value for the next conditional append to that aggregate.
        """
        _, seq = await self._last_message_id(subject)
        return seq

    # --- appends --------------------------------------------------------------------------

    async def append(self, events: Sequence[Event], *, expected: int | None = None) -> AppendResult:
        """Append the events of one command, all or nothing.

        `expected` is the aggregate version (stream sequence of the last event on the first
        event's subject) the command was decided against; `0` means the aggregate must not
        exist yet; `None` appends unconditionally.
        """
        if not events:
            return AppendResult([])
        if len(events) > MAX_BATCH:
            raise AppendRefused(
                f"a command may append at most {MAX_BATCH} events at once, not {len(events)}"
            )
        payloads = [encode_event(event) for event in events]
        for event, payload in zip(events, payloads, strict=True):
            if len(payload) > MAX_PAYLOAD:
                raise PayloadTooLarge(
                    f"event {event.type_name} {event.id}", len(payload), MAX_PAYLOAD
                )
        try:
            if len(events) == 1:
                return await self._append_one(events[0], payloads[0], expected)
            return await self._append_batch(events, payloads, expected)
        except (ConcurrencyConflict, _DuplicateInBatch):
            # The server checks the expected sequence before it looks for duplicates, so a
            # retry of an append that was stored (but whose ack was lost) lands here.
            stored = await self._already_stored(events)
            if stored is None:
                raise
            return stored

    async def append_many(
        self, commands: Sequence[Append], *, window: int = APPEND_WINDOW
    ) -> list[AppendResult | EventLogError]:
        """Append many independent commands, pipelined; the outcome of each, in order.

        Each command is appended as `append` would (conditional, idempotent, all or nothing),
        but up to `window` messages are in flight at once instead of one round trip per
        command: this is how a writer reaches the log's throughput. A command whose answer is
        a conflict, a transient error or no answer in time is retried alone through `append`,
        so a command that was in fact stored is still recognised as stored. The error of one
        command (a conflict, a refusal) is its outcome and never stops the others.
        """
        outcomes: list[AppendResult | EventLogError | None] = [None] * len(commands)
        async with PendingReplies(self.nc, "append") as replies:
            start = 0
            while start < len(commands):
                end, messages, batches = start, 0, 0
                while end < len(commands) and messages < window and batches < MAX_BATCHES_IN_FLIGHT:
                    size = len(commands[end].events)
                    messages += max(1, size)
                    batches += size > 1
                    end += 1
                await self._append_chunk(commands, start, end, replies, outcomes)
                start = end
        return [outcome if outcome is not None else AppendResult([]) for outcome in outcomes]

    async def _append_chunk(
        self,
        commands: Sequence[Append],
        start: int,
        end: int,
        replies: PendingReplies,
        outcomes: list[AppendResult | EventLogError | None],
    ) -> None:
        waiting: dict[int, asyncio.Future[Msg]] = {}
        for index in range(start, end):
            command = commands[index]
            try:
                payloads = self._checked_payloads(command.events)
            except EventLogError as refused:
                outcomes[index] = refused
                continue
            if not payloads:
                outcomes[index] = AppendResult([])
                continue
            reply, waiting[index] = replies.expect(index)
            try:
                await self._publish_command(command, payloads, reply)
            except nats.errors.Error as e:
                raise EventLogUnavailable(f"append of {command.events[0].subject}: {e}") from e
        if waiting:
            await asyncio.wait(waiting.values(), timeout=self.timeout)
        for index, future in waiting.items():
            command = commands[index]
            if future.done():
                try:
                    outcomes[index] = self._acknowledged(command, future.result())
                    continue
                except (ConcurrencyConflict, _DuplicateInBatch, EventLogUnavailable):
                    pass  # decided below, alone
                except EventLogError as refused:
                    outcomes[index] = refused
                    continue
            else:
                replies.forget(index)
            try:
                outcomes[index] = await self.append(command.events, expected=command.expected)
            except EventLogError as failed:
                outcomes[index] = failed

    def _checked_payloads(self, events: Sequence[Event]) -> list[bytes]:
        if len(events) > MAX_BATCH:
            raise AppendRefused(
                f"a command may append at most {MAX_BATCH} events at once, not {len(events)}"
            )
        payloads = [encode_event(event) for event in events]
        for event, payload in zip(events, payloads, strict=True):
            if len(payload) > MAX_PAYLOAD:
                raise PayloadTooLarge(
                    f"event {event.type_name} {event.id}", len(payload), MAX_PAYLOAD
                )
        return payloads

    async def _publish_command(
        self, command: Append, payloads: Sequence[bytes], reply: str
    ) -> None:
        """Publish one command's messages; only the last asks for an answer (on `reply`)."""
        events = command.events
        if len(events) == 1:
            headers = {"Nats-Msg-Id": events[0].id}
            if command.expected is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(command.expected)
            await self.nc.publish(events[0].subject, payloads[0], reply=reply, headers=headers)
            return
        batch_id = uuid.uuid4().hex
        last = len(events)
        for index, (event, payload) in enumerate(zip(events, payloads, strict=True), start=1):
            headers = {
                "Nats-Msg-Id": event.id,
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(index),
            }
            if index == 1 and command.expected is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(command.expected)
            if index < last:
                await self.nc.publish(event.subject, payload, headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                await self.nc.publish(event.subject, payload, reply=reply, headers=headers)

    def _acknowledged(self, command: Append, reply: Msg) -> AppendResult:
        events = command.events
        if len(events) > 1 and b'"err_code":%d' % BATCH_INCOMPLETE in reply.data:
            # Other writers' batches filled the server's allowance of open batches.
            raise EventLogUnavailable(f"batch to {events[0].subject} was not accepted whole")
        ack = _parse_ack(reply, events[0].subject, command.expected)
        if len(events) == 1:
            return AppendResult([int(ack["seq"])], duplicate=bool(ack.get("duplicate")))
        end = int(ack["seq"])
        count = int(ack.get("count", len(events)))
        return AppendResult(list(range(end - count + 1, end + 1)))

    async def _already_stored(self, events: Sequence[Event]) -> AppendResult | None:
        """The result of an earlier identical append, if the log already holds it."""
        first = events[0]
        last_id, last_seq = await self._last_message_id(first.subject)
        for index, event in enumerate(events):
            if event.id == last_id and event.subject == first.subject:
                start = last_seq - index
                return AppendResult(list(range(start, start + len(events))), duplicate=True)
        return None

    async def _last_message_id(self, subject: str) -> tuple[str | None, int]:
        reply = await self._request(
            f"{self.api_prefix}.DIRECT.GET.{self.stream}",
            orjson.dumps({"last_by_subj": subject}),
            None,
        )
        headers = reply.headers or {}
        if headers.get("Status") not in (None, "200") or "Nats-Sequence" not in headers:
            return None, 0
        return headers.get("Nats-Msg-Id"), int(headers["Nats-Sequence"])

    async def _append_one(self, event: Event, payload: bytes, expected: int | None) -> AppendResult:
        headers = {"Nats-Msg-Id": event.id}
        if expected is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
        reply = await self._request(event.subject, payload, headers)
        ack = _parse_ack(reply, event.subject, expected)
        return AppendResult([int(ack["seq"])], duplicate=bool(ack.get("duplicate")))

    async def _append_batch(
        self, events: Sequence[Event], payloads: Sequence[bytes], expected: int | None
    ) -> AppendResult:
        batch_id = uuid.uuid4().hex
        last = len(events)
        for index, (event, payload) in enumerate(zip(events, payloads, strict=True), start=1):
            headers = {
                "Nats-Msg-Id": event.id,
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(index),
            }
            if index == 1 and expected is not None:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
            if index < last:
                try:
                    await self.nc.publish(event.subject, payload, headers=headers)
                except nats.errors.Error as e:
                    raise EventLogUnavailable(f"append of batch {batch_id}: {e}") from e
                continue
            headers["Nats-Batch-Commit"] = "1"
            # The commit cannot be retried on its own: a lost batch is lost as a whole.
            reply = await self._request(event.subject, payload, headers, retry=False)
            ack = _parse_ack(reply, events[0].subject, expected)
            end = int(ack["seq"])
            count = int(ack.get("count", last))
            return AppendResult(list(range(end - count + 1, end + 1)))
        raise AssertionError("unreachable: a batch has a last message")

    # --- reads ----------------------------------------------------------------------------

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
        info = await self.stream_info()
        state = info["state"]
        end_seq = int(state["last_seq"])
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
        """
        name = f"replay-{uuid.uuid4().hex[:20]}"
        config: dict[str, Any] = {
            "name": name,
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
        create = f"{self.api_prefix}.CONSUMER.CREATE.{self.stream}.{name}"
        if subject:
            create += f".{subject}"
        answer = orjson.loads(
            (
                await self._request(
                    create, orjson.dumps({"stream_name": self.stream, "config": config}), None
                )
            ).data
        )
        if isinstance(answer, dict) and answer.get("error"):
            error = answer["error"]
            raise EventLogUnavailable(
                f"cannot read {self.stream}: {error.get('description')} "
                f"(code {error.get('err_code')})"
            )
        inbox = self.nc.new_inbox()
        # One pull request is outstanding at a time, so whatever arrives on the inbox (the
        # messages keep their own subjects) belongs to the newest batch.
        receiving = _PulledBatch(REPLAY_BATCH)

        async def collect(msg: Msg) -> None:
            receiving.add(msg)

        async def pull() -> _PulledBatch:
            nonlocal receiving
            receiving = _PulledBatch(REPLAY_BATCH)
            body = {"batch": REPLAY_BATCH, "max_bytes": REPLAY_BATCH_BYTES, "no_wait": True}
            try:
                await self.nc.publish(
                    f"{self.api_prefix}.CONSUMER.MSG.NEXT.{self.stream}.{name}",
                    orjson.dumps(body),
                    reply=inbox,
                )
            except nats.errors.Error as e:
                raise EventLogUnavailable(f"cannot read {self.stream}: {e}") from e
            return receiving

        try:
            sub = await self.nc.subscribe(
                inbox, cb=collect, pending_msgs_limit=0, pending_bytes_limit=0
            )
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot read {self.stream}: {e}") from e
        try:
            pending: _PulledBatch | None = await pull()
            while pending is not None:
                await pending.wait(self.timeout * 2, self.stream)
                current, pending = pending, None
                if current.messages and current.last_seq < end_seq and current.more:
                    pending = await pull()
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
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
            with contextlib.suppress(EventLogError):
                await self._request(
                    f"{self.api_prefix}.CONSUMER.DELETE.{self.stream}.{name}",
                    b"",
                    None,
                    retry=False,
                )

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
            sub = await self.js.subscribe(
                subject or ">",
                stream=self.stream,
                ordered_consumer=True,
                config=config,
                cb=deliver,
                idle_heartbeat=2.0,
                pending_msgs_limit=0,
            )
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EventLogUnavailable(f"cannot read {self.stream}: {e}") from e
        try:
            if not follow and await _nothing_to_deliver(sub):
                return
            while True:
                if not follow:
                    try:
                        msg = await asyncio.wait_for(queue.get(), timeout=self.timeout * 2)
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

    # --- plumbing -------------------------------------------------------------------------

    async def _request(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        *,
        retry: bool = True,
    ) -> Msg:
        """A request with bounded retries on transient transport errors only.

        Retrying an append is safe: the server recognises the `Nats-Msg-Id` of a message it
        already stored and answers `duplicate` instead of storing it twice.
        """
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_TRANSIENT),
                stop=stop_after_attempt(self.attempts if retry else 1),
                wait=wait_exponential(multiplier=0.1, max=2.0),
                reraise=True,
            ):
                with attempt:
                    return await self.nc.request(
                        subject, payload, timeout=self.timeout, headers=headers
                    )
        except _TRANSIENT as e:
            raise EventLogUnavailable(f"no answer from JetStream for {subject}: {e!r}") from e
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"request on {subject} failed: {e}") from e
        raise AssertionError("unreachable: tenacity either returns or raises")


def _parse_ack(reply: Msg, subject: str, expected: int | None) -> dict[str, Any]:
    if reply.headers and reply.headers.get("Status") == "503":
        raise EventLogUnavailable(f"no stream answered for {subject} (503)")
    try:
        ack = orjson.loads(reply.data)
    except orjson.JSONDecodeError as e:
        raise AppendRefused(f"unreadable acknowledgement for {subject}: {reply.data!r}") from e
    error = ack.get("error") if isinstance(ack, dict) else None
    if error:
        code = int(error.get("err_code", 0))
        description = str(error.get("description", ""))
        if code in CONFLICT_CODES:
            raise ConcurrencyConflict(subject, expected, description)
        if code == DUPLICATE_IN_BATCH:
            raise _DuplicateInBatch(f"append to {subject} refused: {description}")
        if code == 10054 or "maximum payload" in description:
            raise PayloadTooLarge(f"message on {subject}", len(reply.data), MAX_PAYLOAD)
        raise AppendRefused(f"append to {subject} refused: {description} (code {code})")
    if not isinstance(ack, dict) or "seq" not in ack:
        raise AppendRefused(f"unexpected acknowledgement for {subject}: {ack!r}")
    return ack


async def _nothing_to_deliver(sub: Any) -> bool:
    """True when a fresh consumer matched nothing: no message is pending or was delivered."""
    try:
        info = await sub.consumer_info()
    except (nats.errors.Error, nats.js.errors.Error):
        return False
    return int(info.num_pending or 0) == 0 and int(info.delivered.consumer_seq or 0) == 0


class _DuplicateInBatch(AppendRefused):
    """A batch was refused for holding an already stored id; `append` decides what it means."""


def _stored_at(msg: Msg) -> datetime:
    """The server's storage time of a consumed message, to the microsecond, rounded down.

    nats-py's own metadata divides nanoseconds as a float, which can round up past the
    true time; replays `since` a stored time must include that message, so use integers.
    """
    if not msg.reply:
        return msg.metadata.timestamp
    return _from_nanos(_ack_position(msg.reply)[1])


class PendingReplies:
    """Answers to many requests published back to back, each awaited through its own future.

    One subscription on `<inbox>.*` serves them all, so a pipeline of requests costs one
    publish each instead of a request-reply round trip (and a task) each. Use it as an async
    context manager around the publishes; `expect(key)` gives the reply subject to publish with
    and the future its answer resolves."""

    def __init__(self, nc: NatsClient, purpose: str) -> None:
        self.nc = nc
        self.purpose = purpose
        self.prefix = nc.new_inbox()
        self._futures: dict[str, asyncio.Future[Msg]] = {}
        self._sub: Subscription | None = None

    async def __aenter__(self) -> PendingReplies:
        async def answer(msg: Msg) -> None:
            future = self._futures.pop(msg.subject, None)
            if future is not None and not future.done():
                future.set_result(msg)

        try:
            self._sub = await self.nc.subscribe(
                f"{self.prefix}.*", cb=answer, pending_msgs_limit=0, pending_bytes_limit=0
            )
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot {self.purpose}: {e}") from e
        return self

    async def __aexit__(self, *_: object) -> None:
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()

    def expect(self, key: int) -> tuple[str, asyncio.Future[Msg]]:
        reply = f"{self.prefix}.{key}"
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._futures[reply] = future
        return reply, future

    def forget(self, key: int) -> None:
        """Stop waiting for `key` (its answer did not come in time)."""
        future = self._futures.pop(f"{self.prefix}.{key}", None)
        if future is not None:
            future.cancel()


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
                    raise EventLogUnavailable(
                        f"reading {stream}: no answer for {idle_timeout:.0f} s"
                    ) from None
                continue
            if self.status in ("", "404", "408") or (self.status == "409" and self.messages):
                return
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


__all__ = [
    "Append",
    "AppendResult",
    "EventLogError",
    "EventStore",
    "StoredEvent",
    "connect",
]
