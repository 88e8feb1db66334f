"""Running a scheduler in-process against the real hub nats-server, and reading DESIRED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from events.catalog import ClusterTaskScheduled, Event
from events.store import EventStore, StoredEvent
from events.streams import REPORTS_STREAM, reports_stream
from scheduler.service import SchedulerService
from sealing.envelope import is_sealed_bytes, open_bytes
from taskset.capabilities import RenderContext
from taskset.codec import decode_cluster_task
from taskset.model import ClusterTask, Taskset
from tests.eventually import eventually
from tests.scheduler_fixtures import ReplicasRenderer, ScheduledFact, scheduled_facts


class FakeChartRenderer(ReplicasRenderer):
    async def prepare(self, chart_archive_digest: str) -> None:
        return None

    def render(
        self,
        chart_archive_digest: str,
        values: dict[str, Any],
        name: str,
        namespace: str,
        previous: Taskset | None = None,
        context: RenderContext | None = None,
    ) -> Taskset:
        return super().render(chart_archive_digest, values, name, namespace, previous)


async def reports_store(store: EventStore) -> EventStore:
    """REPORTS capturing `fleet.report.>` on the hub itself, so tests can inject reports."""
    await store.ensure_stream(reports_stream())
    return store.on_stream(REPORTS_STREAM)


@asynccontextmanager
async def running_scheduler(store: EventStore, **options: Any) -> AsyncIterator[SchedulerService]:
    reports = await reports_store(store)
    service = SchedulerService(
        store, reports, options.pop("renderer", FakeChartRenderer()), **options
    )
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await eventually(lambda: service.ready.is_set(), what="scheduler ready")
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


async def desired(store: EventStore, cluster: str, taskset: str) -> ClusterTask | None:
    reply = await store.nc.request(
        "$JS.API.DIRECT.GET.DESIRED",
        orjson.dumps({"last_by_subj": f"fleet.desired.{cluster}.{taskset}"}),
        timeout=5,
    )
    if reply.headers and reply.headers.get("Status") == "404":
        return None
    payload = bytes(reply.data)
    if is_sealed_bytes(payload):
        assert store.sealer is not None, "a sealed ClusterTask in DESIRED, and no keyring"
        subject = f"fleet.desired.{cluster}.{taskset}"
        payload = open_bytes(store.sealer.keys, payload, subject.encode(), subject)
    return decode_cluster_task(payload)


async def versions(store: EventStore, clusters: list[str], taskset: str = "web") -> dict[str, Any]:
    """cluster -> version it holds, "removed", or None."""
    out: dict[str, Any] = {}
    for cluster in clusters:
        task = await desired(store, cluster, taskset)
        out[cluster] = None if task is None else ("removed" if task.removed else task.version)
    return out


async def log_of(store: EventStore, subject: str | None = None) -> list[StoredEvent]:
    return [stored async for stored in store.read(subject=subject)]


async def events_of(store: EventStore, kind: type[Event], subject: str | None = None) -> list[Any]:
    """Events of one type; `subject` defaults to that type's aggregate (no snapshot bodies)."""
    aggregate = getattr(kind, "aggregate", None)
    if subject is None and isinstance(aggregate, str):
        subject = f"fleet.evt.{aggregate}.>"
    return [s.event for s in await log_of(store, subject) if isinstance(s.event, kind)]


async def scheduled_of(store: EventStore) -> list[ScheduledFact]:
    """Every cluster's new desired state on the log, one fact per cluster, in log order."""
    return scheduled_facts(await events_of(store, ClusterTaskScheduled))
