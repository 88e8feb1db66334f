"""`/api/v1/events`: replay the log page by page, or follow it live (Server-Sent Events).

Replay pages by stream sequence: a page holds at most `limit` events at or after `from_seq`
that pass the filters, and `next_from_seq` is the sequence of the next matching event (null at
the end), so paging never skips nor repeats an event even while the log grows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent

from api.auth import ACCEPTS_TICKET, Role, requires
from api.context import Hub, HubContext
from api.errors import InvalidRequest
from api.event_records import EventRecord, StreamName, concerns, event_record
from api.log_readers import closing
from api.read_cache import json_response
from api.sse import Cursor, LiveFilter, live_messages
from api.tenancy import Tenant
from events.archive_verify import verify_trail
from events.catalog import Event
from projector import queries
from taskset.selectors import parse_selector

MAX_PAGE = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    stream: StreamName
    events: list[EventRecord]
    next_from_seq: int | None
    """Pass as `from_seq` to get the next page; null when this page reached the end."""
    last_seq: int
    """The newest sequence of the stream when the page was read."""


def as_utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is UTC (as the CLI reads it)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _names(
    tenant: Tenant, cluster: str | None, taskset: str | None
) -> tuple[str | None, str | None]:
    """The full names of the `cluster` and `taskset` filters in the request's project."""
    return (
        tenant.full("cluster", cluster) if cluster is not None else None,
        tenant.full("taskset", taskset) if taskset is not None else None,
    )


SelectorParam = Annotated[
    str | None,
    QueryParameter(
        max_length=1024,
        description="only events about clusters whose labels match this selector "
        "(`env=prod,tier!=edge`), deregistered clusters included",
    ),
]


async def clusters_matching(hub: HubContext, selector: str | None) -> frozenset[str] | None:
    """The clusters whose labels match `selector` now (None without a selector)."""
    if selector is None:
        return None
    wanted = parse_selector(selector)
    async with hub.read_models() as db:
        rows = await queries.clusters(db, include_deregistered=True)
    return frozenset(row.name for row in rows if wanted.matches(row.labels))


@get(
    "/api/v1/events",
    guards=[requires(Role.viewer)],
    summary="Replay the event log",
    description="Events in stream order, filtered by time, cluster (or a label selector of "
    "clusters) and taskset, one page at a "
    "time. `stream=reports` replays what clusters reported instead of hub events. A page is "
    "read once per state of the stream, however many ask; answers carry an ETag and "
    "`If-None-Match` with it gets 304 while the stream has not grown.",
    tags=["events"],
    responses={200: ResponseSpec(data_container=EventPage, description="One page of events")},
)
async def replay_events(
    request: Request[Any, Any, Any],
    hub: Hub,
    tenant: Tenant,
    stream: FromQuery[StreamName] = "events",
    from_seq: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
    since: FromQuery[datetime | None] = None,
    until: FromQuery[datetime | None] = None,
    cluster: FromQuery[str | None] = None,
    taskset: FromQuery[str | None] = None,
    selector: SelectorParam = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
) -> Response[bytes]:
    cluster, taskset = _names(tenant, cluster, taskset)
    among = await clusters_matching(hub, selector)
    since, until = as_utc(since), as_utc(until)
    if since is not None and since <= EPOCH:
        since = None  # nothing is older than the log: read from its start
    if since is not None and until is not None and until < since:
        raise InvalidRequest("`until` is before `since`", {"since": since, "until": until})
    store = hub.store if stream == "events" else hub.reports
    last_seq = await store.last_sequence()

    async def build() -> bytes:
        page = await read_page(
            hub,
            stream,
            last_seq,
            from_seq,
            since,
            until,
            cluster,
            taskset,
            limit,
            tenant.sees,
            among,
        )
        return msgspec.json.encode(page)

    key = ("events", stream, from_seq, since, until, cluster, taskset, limit, tenant.view, among)
    return json_response(request, await hub.reads.answer(key, last_seq, build))


async def read_page(
    hub: HubContext,
    stream: StreamName,
    last_seq: int,
    from_seq: int | None,
    since: datetime | None,
    until: datetime | None,
    cluster: str | None,
    taskset: str | None,
    limit: int,
    visible: Callable[[Event], bool],
    among: frozenset[str] | None = None,
) -> EventPage:
    """The page of at most `limit` matching events from `from_seq` (or `since`)."""
    store = hub.store if stream == "events" else hub.reports
    records: list[EventRecord] = []
    next_from_seq: int | None = None
    async with closing(
        store.read(
            from_seq=from_seq,
            since=since if from_seq is None else None,
            until=until,
            skip_undecodable=True,
        )
    ) as stored_events:
        async for stored in stored_events:
            if since is not None and stored.stored_at < since:
                continue
            if not visible(stored.event):
                continue
            if not concerns(stored.event, cluster=cluster, taskset=taskset, among=among):
                continue
            if len(records) == limit:
                next_from_seq = stored.seq
                break
            records.append(event_record(stream, stored, cluster))
    return EventPage(stream=stream, events=records, next_from_seq=next_from_seq, last_seq=last_seq)


@get(
    "/api/v1/events/stream",
    guards=[requires(Role.viewer)],
    opt={ACCEPTS_TICKET: True},
    summary="Follow the event log live (Server-Sent Events)",
    description="Each message is one event record as JSON; its id is a cursor over both "
    "streams that `Last-Event-ID` resumes from. Without a cursor or `from_seq` only new "
    "events are sent. Browsers authenticate with `ticket` (POST /api/v1/stream-tickets) and "
    "name the project with `project`.",
    tags=["events"],
    media_type="text/event-stream",
)
async def stream_events(
    hub: Hub,
    tenant: Tenant,
    streams: FromQuery[Literal["all", "events", "reports"]] = "all",
    from_seq: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
    reports_from_seq: Annotated[int | None, QueryParameter(ge=1, le=2**53)] = None,
    cluster: FromQuery[str | None] = None,
    taskset: FromQuery[str | None] = None,
    selector: SelectorParam = None,
    ticket: FromQuery[str | None] = None,
    project: FromQuery[str | None] = None,
    last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
) -> ServerSentEvent:
    cluster, taskset = _names(tenant, cluster, taskset)
    among = await clusters_matching(hub, selector)
    cursor = Cursor.parse(last_event_id) if last_event_id else None
    if last_event_id and cursor is None:
        raise InvalidRequest(
            f"Last-Event-ID {last_event_id!r} is not a cursor of this stream (like '12-40')"
        )
    if cursor is None:
        events_end = await hub.store.last_sequence()
        reports_end = await hub.reports.last_sequence()
        cursor = Cursor(
            events=from_seq - 1 if from_seq is not None else events_end,
            reports=reports_from_seq - 1 if reports_from_seq is not None else reports_end,
        )
    selected: frozenset[StreamName] = (
        frozenset({"events", "reports"}) if streams == "all" else frozenset({streams})
    )
    return ServerSentEvent(
        live_messages(
            {"events": hub.store, "reports": hub.reports},
            cursor,
            LiveFilter(
                streams=selected,
                cluster=cluster,
                taskset=taskset,
                among=among,
                visible=tenant.sees,
            ),
            stop=hub.shutdown,
            heartbeat_s=hub.sse_heartbeat_s,
            metrics=hub.metrics,
        )
    )


@get(
    "/api/v1/events/verify",
    guards=[requires(Role.viewer, org=True)],
    summary="Verify the audit trail: archive segments and live log, end to end",
    description="Reads every archive segment in order and checks its hash, its link to the "
    "segment before it, its range against its neighbours, every `EventsArchived` record, and "
    "that the live log starts where the archive ends. `ok` is false and `broken` names the "
    "first segment (0: the live log) and sequence where the trail breaks. The trail is the "
    "whole hub's: an org-level token reads it.",
    tags=["events"],
)
async def verify_events(hub: Hub) -> dict[str, Any]:
    report = await verify_trail(hub.store)
    return report.to_json()


ROUTES = [replay_events, stream_events, verify_events]
