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
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
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
from events.streams import EVENTS_STREAM, MAX_PAYLOAD

log = logging.getLogger(__name__)

MAX_BATCH = 1000
"""The server's limit on messages in one atomic batch."""

CONFLICT_CODES = frozenset({10071, 10164})
"""Wrong last sequence; and its form inside an atomic batch."""
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
    }
    if user is not None:
        options["user"] = user
        options["password"] = password
    if tls is not None:
        options["tls"] = tls
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    try:
        return await nats.connect(**options)
    except (TimeoutError, nats.errors.Error, OSError) as e:
        raise EventLogUnavailable(f"cannot connect to NATS at {url}: {e}") from e


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

    async def ensure_stream(self, config: dict[str, Any]) -> None:
        """Create the stream, or bring an existing one to `config`. Idempotent."""
        name = config["name"]
        reply = await self._request(
            f"{self.api_prefix}.STREAM.CREATE.{name}", orjson.dumps(config), None
        )
        answer = orjson.loads(reply.data)
        error = answer.get("error") if isinstance(answer, dict) else None
        if not error:
            return
        if error.get("err_code") == 10058:  # stream name already in use (config differs)
            await self.api_request(f"STREAM.UPDATE.{name}", config)
            return
        raise AppendRefused(f"cannot create stream {name}: {error.get('description')}")

    async def ensure_streams(self, configs: Sequence[dict[str, Any]]) -> None:
        for config in configs:
            await self.ensure_stream(config)

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

    async def read(
        self,
        *,
        from_seq: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        subject: str | None = None,
        skip_undecodable: bool = False,
        on_undecodable: Callable[[UndecodableEvent], None] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Replay the log from a sequence or a time up to what it held when the read began."""
        async for stored in self._consume(
            from_seq=from_seq,
            since=since,
            until=until,
            subject=subject,
            follow=False,
            skip_undecodable=skip_undecodable,
            on_undecodable=on_undecodable,
        ):
            yield stored

    async def follow(
        self,
        *,
        from_seq: int | None = None,
        since: datetime | None = None,
        subject: str | None = None,
        skip_undecodable: bool = False,
        on_undecodable: Callable[[UndecodableEvent], None] | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Replay like `read`, then keep yielding new events as they are appended."""
        async for stored in self._consume(
            from_seq=from_seq,
            since=since,
            until=None,
            subject=subject,
            follow=True,
            skip_undecodable=skip_undecodable,
            on_undecodable=on_undecodable,
        ):
            yield stored

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
    ) -> AsyncIterator[StoredEvent]:
        if not follow:
            info = await self.stream_info()
            state = info["state"]
            if int(state["messages"]) == 0:
                return
            end_seq = int(state["last_seq"])
            if from_seq is not None and from_seq > end_seq:
                return
        else:
            end_seq = 0
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
            sub = await self.js.subscribe(
                subject or ">",
                stream=self.stream,
                ordered_consumer=True,
                config=config,
                cb=deliver,
                idle_heartbeat=2.0,
                pending_msgs_limit=65536,
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
                try:
                    event = self.decoder.decode(msg.data, seq=seq, subject=msg.subject)
                except UndecodableEvent as bad:
                    if not skip_undecodable:
                        raise
                    (on_undecodable or _log_undecodable)(bad)
                else:
                    yield StoredEvent(seq, msg.subject, stored_at, event, msg.headers)
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
    nanos = int((msg.reply or "").split(".")[-2]) if msg.reply else 0
    if not nanos:
        return msg.metadata.timestamp
    seconds, rest = divmod(nanos, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


def _log_undecodable(bad: UndecodableEvent) -> None:
    log.warning("skipping undecodable message", extra={"seq": bad.seq, "reason": bad.reason})


__all__ = [
    "AppendResult",
    "EventLogError",
    "EventStore",
    "StoredEvent",
    "connect",
]
