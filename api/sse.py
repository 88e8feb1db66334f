"""The live event stream: new events of the log as Server-Sent Events.

SSE rather than WebSockets because the flow is one-way, it is plain HTTP (proxies, curl, the
CLI's urllib all read it), and browsers reconnect by themselves, sending the id of the last
event they saw.

The stream merges two logs, EVENTS (commands and decisions) and REPORTS (what clusters did), so
the dashboard sees a publish and the clusters converging in one feed. Each message's id is a
cursor over both, `<events seq>-<reports seq>`; resuming from it (`Last-Event-ID`) misses
nothing and repeats nothing. A comment goes out when nothing happened for a while, so idle
connections are not cut by proxies, and the stream ends when the hub shuts down.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
import msgspec
from litestar.response import ServerSentEventMessage

from api.event_records import StreamName, concerns, event_record
from api.log_readers import closing
from api.metrics import HubMetrics
from events.catalog import Event
from events.errors import EventLogError
from events.store import EventStore, StoredEvent
from events.tasks import cancel_and_wait

RETRY_MS = 3000
_CURSOR = re.compile(r"^(\d+)-(\d+)$")
_ENCODER = msgspec.json.Encoder()


@dataclass
class Cursor:
    """The last sequence delivered (or skipped) from each stream."""

    events: int
    reports: int

    def __str__(self) -> str:
        return f"{self.events}-{self.reports}"

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        match = _CURSOR.match(text.strip())
        if match is None:
            return None
        return cls(events=int(match.group(1)), reports=int(match.group(2)))

    def advance(self, stream: StreamName, seq: int) -> None:
        if stream == "events":
            self.events = max(self.events, seq)
        else:
            self.reports = max(self.reports, seq)


def everything(_: Event) -> bool:
    return True


@dataclass(frozen=True)
class LiveFilter:
    streams: frozenset[StreamName]
    cluster: str | None = None
    taskset: str | None = None
    among: frozenset[str] | None = None
    """The clusters a label selector matched when the stream was opened (None: no selector)."""
    visible: Callable[[Event], bool] = everything
    """Which events the caller may see at all (its project's, `api.tenancy`)."""


async def live_messages(
    sources: dict[StreamName, EventStore],
    cursor: Cursor,
    live_filter: LiveFilter,
    *,
    stop: asyncio.Event,
    heartbeat_s: float,
    metrics: HubMetrics | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    """SSE messages for every event after `cursor` that passes `live_filter`, until `stop`."""
    queue: asyncio.Queue[tuple[StreamName, StoredEvent] | EventLogError] = asyncio.Queue(
        maxsize=1024
    )

    async def pump(name: StreamName, store: EventStore, start: int) -> None:
        try:
            async with closing(store.follow(from_seq=start, skip_undecodable=True)) as stream:
                async for stored in stream:
                    await queue.put((name, stored))
        except EventLogError as e:
            await queue.put(e)

    starts = {"events": cursor.events + 1, "reports": cursor.reports + 1}
    pumps = [
        asyncio.create_task(pump(name, store, starts[name]), name=f"sse-{name}")
        for name, store in sources.items()
        if name in live_filter.streams
    ]
    stopping = asyncio.create_task(stop.wait(), name="sse-stop")
    getter: asyncio.Task[tuple[StreamName, StoredEvent] | EventLogError] | None = None
    if metrics is not None:
        metrics.sse_clients.inc()
    try:
        yield ServerSentEventMessage(data=None, comment="fleetbus live events", retry=RETRY_MS)
        while True:
            if getter is None:
                getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait(
                {getter, stopping},
                timeout=heartbeat_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter in done:
                item = getter.result()
                getter = None
                if isinstance(item, EventLogError):
                    yield ServerSentEventMessage(
                        event="stream-error",
                        data=_ENCODER.encode({"error": str(item)}).decode(),
                    )
                    return
                name, stored = item
                cursor.advance(name, stored.seq)
                if not live_filter.visible(stored.event) or not concerns(
                    stored.event,
                    cluster=live_filter.cluster,
                    taskset=live_filter.taskset,
                    among=live_filter.among,
                ):
                    continue
                record = event_record(name, stored, live_filter.cluster)
                yield ServerSentEventMessage(data=_ENCODER.encode(record).decode(), id=str(cursor))
            elif stopping in done:
                return
            else:
                yield ServerSentEventMessage(data=None, comment="keepalive")
    finally:
        if metrics is not None:
            metrics.sse_clients.dec()
        # A client that went away cancels this generator through an anyio cancel scope, which
        # would cancel every await in here too: shield the cleanup so the readers really end.
        with anyio.CancelScope(shield=True):
            await cancel_and_wait([*pumps, stopping, *([getter] if getter is not None else [])])
