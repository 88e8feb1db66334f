"""The event store: the log's one front door, for appends, reads and stream administration.

`EventStore` binds one stream of the hub (EVENTS by default) on one connection and puts
together the parts that live in their own modules: the connection and its one retrying request
(`events.connection`), the stream's API and administration (`events.stream_api`), conditional,
idempotent and atomic appends (`events.appends`), replays and follows (`events.replay`), and
the reply multiplexer of pipelined writes (`events.replies`). Its errors are `events.errors`,
never a NATS exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from events.appends import Append, Appender, AppendResult
from events.codec import EventDecoder
from events.connection import connect
from events.errors import EventLogError
from events.replay import Reader, StoredEvent
from events.sealed import EventSealer
from events.stream_api import SETTLE_WITHIN_S, StreamApi
from events.streams import EVENTS_STREAM, MANAGED_ELSEWHERE


class EventStore(Appender, Reader):
    """Append events to and read them from one stream of the hub (EVENTS by default).

    `append` and `append_many` come from `events.appends.Appender`, `read` and `follow` from
    `events.replay.Reader`; both work through `api`, the stream's `StreamApi`."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        stream: str = EVENTS_STREAM,
        domain: str | None = None,
        timeout: float = 5.0,
        attempts: int = 5,
        decoder: EventDecoder | None = None,
        sealer: EventSealer | None = None,
    ) -> None:
        self.api = StreamApi(nc, stream, domain=domain, timeout=timeout, attempts=attempts)
        self.decoder = decoder or EventDecoder()
        self.sealer = sealer

    @property
    def nc(self) -> NatsClient:
        return self.api.nc

    @property
    def stream(self) -> str:
        return self.api.stream

    @property
    def domain(self) -> str | None:
        return self.api.domain

    @property
    def timeout(self) -> float:
        return self.api.timeout

    def on_stream(self, stream: str) -> EventStore:
        """A store for another stream of the hub, on the same connection."""
        return EventStore(
            self.api.nc,
            stream=stream,
            domain=self.api.domain,
            timeout=self.api.timeout,
            attempts=self.api.attempts,
            decoder=self.decoder,
            sealer=self.sealer,
        )

    async def close(self) -> None:
        """Drain and close the connection (pending appends complete first)."""
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await self.api.nc.drain()

    # --- administration -------------------------------------------------------------------

    async def api_request(self, subject: str, body: dict[str, Any] | None = None) -> Any:
        """One JetStream API request; errors come back as `AppendRefused`/`EventLogUnavailable`."""
        return await self.api.api_request(subject, body)

    async def api_send(
        self, subject: str, body: dict[str, Any] | None = None, *, answer_within: float
    ) -> Any | None:
        """One JetStream API request sent once without blocking on its answer: the answer if
        it came within `answer_within` seconds, else None (the server may still act on it)."""
        return await self.api.api_send(subject, body, answer_within=answer_within)

    async def ensure_stream(self, config: dict[str, Any], *, keep: Sequence[str] = ()) -> None:
        """Create the stream, or bring an existing one to `config` (keeping the fields in
        `keep`). Idempotent."""
        await self.api.ensure_stream(config, keep=keep)

    async def ensure_streams(
        self,
        configs: Sequence[dict[str, Any]],
        *,
        keep: Mapping[str, Sequence[str]] = MANAGED_ELSEWHERE,
        settle_within: float = SETTLE_WITHIN_S,
    ) -> None:
        """Create or update every stream, waiting up to `settle_within` seconds for a cluster
        that is still forming."""
        await self.api.ensure_streams(configs, keep=keep, settle_within=settle_within)

    async def stream_info(self, stream: str | None = None) -> dict[str, Any]:
        return await self.api.stream_info(stream)

    async def last_sequence(self) -> int:
        return await self.api.last_sequence()

    async def subject_version(self, subject: str) -> int:
        """The stream sequence of the last message on `subject`, 0 if there is none: the
        `expected` value for the next conditional append to that aggregate."""
        return await self.api.subject_version(subject)


__all__ = [
    "Append",
    "AppendResult",
    "EventLogError",
    "EventStore",
    "StoredEvent",
    "connect",
]
