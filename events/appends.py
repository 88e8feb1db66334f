"""Appends to the log: conditional, idempotent, all or nothing per command, and pipelined.

Each event goes to its aggregate's subject with `Nats-Msg-Id` = event id (a retried append is
stored once) and, when the caller knows the aggregate's version,
`Nats-Expected-Last-Subject-Sequence` (a stale write is refused and raised as
`ConcurrencyConflict`). The events of one command are appended as one atomic batch
(`Nats-Batch-*` headers, stream `allow_atomic`): the server stores all of them or none.
`append_many` keeps thousands of commands in flight on one reply subscription.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import orjson
from nats.aio.msg import Msg

from events.catalog import Event
from events.codec import encode_event
from events.errors import (
    AppendRefused,
    ConcurrencyConflict,
    EventLogError,
    EventLogUnavailable,
    PayloadTooLarge,
)
from events.replies import PendingReplies
from events.sealed import EventSealer
from events.stream_api import StreamApi
from events.streams import MAX_PAYLOAD

MAX_BATCH = 1000
"""The server's limit on messages in one atomic batch."""
MAX_BATCHES_IN_FLIGHT = 32
"""Atomic batches `append_many` keeps open at once (the server allows 50 per stream)."""
APPEND_WINDOW = 2048
"""Messages `append_many` keeps in flight before it waits for their answers."""

CONFLICT_CODES = frozenset({10071, 10164})
"""Wrong last sequence; and its form inside an atomic batch."""
BATCH_INCOMPLETE = 10176
"""An atomic batch the server did not take in whole (e.g. too many batches were open)."""
DUPLICATE_IN_BATCH = 10201
"""An atomic batch carries a message id the stream already holds: a retried command."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    sequences: list[int]
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Append:
    """One command's events for `append_many`: appended all or nothing, like `append`."""

    events: Sequence[Event]
    expected: int | None = None


class Appender:
    """The append half of `events.store.EventStore` (see the module docstring)."""

    api: StreamApi
    sealer: EventSealer | None = None
    """Seals the secret parts of each event before it is encoded (`events.sealed`)."""

    async def append(self, events: Sequence[Event], *, expected: int | None = None) -> AppendResult:
        """Append the events of one command, all or nothing.

        `expected` is the aggregate version (stream sequence of the last event on the first
        event's subject) the command was decided against; `0` means the aggregate must not
        exist yet; `None` appends unconditionally.
        """
        if not events:
            return AppendResult([])
        payloads = self._checked_payloads(events)
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
        async with PendingReplies(self.api.nc, "append") as replies:
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
            await asyncio.wait(waiting.values(), timeout=self.api.timeout)
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
        sealer = self.sealer
        payloads = [encode_event(sealer.seal(e) if sealer else e) for e in events]
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
            await self.api.nc.publish(events[0].subject, payloads[0], reply=reply, headers=headers)
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
                await self.api.nc.publish(event.subject, payload, headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                await self.api.nc.publish(event.subject, payload, reply=reply, headers=headers)

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
        last_id, last_seq = await self.api.last_message_id(first.subject)
        for index, event in enumerate(events):
            if event.id == last_id and event.subject == first.subject:
                start = last_seq - index
                return AppendResult(list(range(start, start + len(events))), duplicate=True)
        return None

    async def _append_one(self, event: Event, payload: bytes, expected: int | None) -> AppendResult:
        headers = {"Nats-Msg-Id": event.id}
        if expected is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected)
        reply = await self.api.request(event.subject, payload, headers)
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
                    await self.api.nc.publish(event.subject, payload, headers=headers)
                except nats.errors.Error as e:
                    raise EventLogUnavailable(f"append of batch {batch_id}: {e}") from e
                continue
            headers["Nats-Batch-Commit"] = "1"
            # The commit cannot be retried on its own: a lost batch is lost as a whole.
            reply = await self.api.request(event.subject, payload, headers, retry=False)
            ack = _parse_ack(reply, events[0].subject, expected)
            end = int(ack["seq"])
            count = int(ack.get("count", last))
            return AppendResult(list(range(end - count + 1, end + 1)))
        raise AssertionError("unreachable: a batch has a last message")


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


class _DuplicateInBatch(AppendRefused):
    """A batch was refused for holding an already stored id; `append` decides what it means."""
