"""`/api/v1/charts/...`: the time series behind the dashboard's charts, from the read models.

- `event-rate`: events and reports stored per bucket over a recent window;
- `convergence/{taskset}`: clusters applied and failed over time since the latest version was
  published, with the rollout's waves;
- `drift/{cluster}`: a cluster's drift detected and corrected, in time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar import get
from litestar.params import PathParameter, QueryParameter

from api.auth import Role, requires
from api.context import Hub
from api.errors import NotFound
from api.tenancy import Tenant
from projector import queries, timelines

NameParam = Annotated[str, PathParameter(max_length=63)]


@get(
    "/api/v1/charts/event-rate",
    guards=[requires(Role.viewer)],
    tags=["charts"],
    summary="Events and reports stored per bucket over the last `minutes` (empty buckets too)",
)
async def event_rate_chart(
    hub: Hub,
    tenant: Tenant,
    minutes: Annotated[int, QueryParameter(ge=1, le=24 * 60)] = 60,
    bucket_seconds: Annotated[int, QueryParameter(ge=1, le=3600)] = 60,
) -> timelines.EventRate:
    if minutes * 60 // bucket_seconds > 2000:
        bucket_seconds = minutes * 60 // 2000 + 1  # at most ~2000 bars, whatever is asked
    async with hub.read_models() as db:
        return await timelines.event_rate(
            db,
            now=datetime.now(UTC),
            window=timedelta(minutes=minutes),
            bucket_seconds=bucket_seconds,
            project=None if tenant.whole_hub else tenant.name,
        )


@get(
    "/api/v1/charts/convergence/{name:str}",
    guards=[requires(Role.viewer)],
    tags=["charts"],
    summary="A taskset's latest version: clusters applied and failed over time, and its waves",
)
async def convergence_chart(hub: Hub, tenant: Tenant, name: NameParam) -> timelines.Convergence:
    shown, name = name, tenant.own("taskset", name)
    async with hub.read_models() as db:
        versions = await queries.taskset_versions(db, name)
        if not versions:
            raise NotFound(f"taskset {shown} has never been published")
        since = timelines.parse_time(versions[0].published_at)
        return await timelines.convergence(db, name, since)


@get(
    "/api/v1/charts/drift/{name:str}",
    guards=[requires(Role.viewer)],
    tags=["charts"],
    summary="A cluster's drift detected and corrected, oldest first (the latest 2000)",
)
async def drift_chart(hub: Hub, tenant: Tenant, name: NameParam) -> timelines.DriftTimeline:
    shown, name = name, tenant.own("cluster", name)
    async with hub.read_models() as db:
        known = {row.name for row in await queries.clusters(db, include_deregistered=True)}
        if name not in known:
            raise NotFound(f"cluster {shown} is not registered")
        return await timelines.drift_timeline(db, name)


ROUTES = [event_rate_chart, convergence_chart, drift_chart]
