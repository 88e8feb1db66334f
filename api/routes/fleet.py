"""The fleet as the projector sees it: status matrix, clusters, tasksets and their rollouts.

Read-only views over the projector's SQLite read models (`projector.queries`), shaped for the
dashboard and the CLI. They lag the log by the projector's delay (milliseconds); `positions`
says up to which sequence of each stream a view is current.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, PathParameter, QueryParameter

from api.auth import Role, requires
from api.context import CONNECTED_WITHIN, Hub, HubContext
from api.errors import InvalidRequest, NotFound, ServiceUnavailable, register_status
from api.read_cache import json_response
from api.tenancy import Tenant, TenantScope
from events.inventory import ControllerStatus, EdgeStatus
from projector import queries
from projector.db import ProjectionDb
from projector.errors import ProjectionMissing, ProjectionUnreadable
from projector.queries import (
    CELL_STATES,
    AuditRow,
    ClusterQuery,
    ClusterRow,
    LabelTest,
    RolloutRow,
    StatusRow,
    TasksetRow,
    VersionRow,
)
from taskset.names import check_name
from taskset.selectors import parse_selector

register_status(ProjectionMissing, 503)
register_status(ProjectionUnreadable, 503)

DRIFT_TYPES = ("DriftDetected", "DriftCorrected")
REPORT_TYPES = ("TaskApplied", "TaskFailed", "DriftDetected", "DriftCorrected")

NameParam = Annotated[str, PathParameter(max_length=63)]


class ClusterView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    labels: dict[str, str]
    registered_at: str
    connected: bool
    """Heard from (inventory digest or report) within the last 90 seconds."""
    last_seen: datetime | None = None
    registered: bool = True
    """False for a deregistered cluster (listed only with `all=true`)."""
    edge_version: str = ""
    """The version of the cluster's connector, from its last inventory digest ("": not known)."""
    edge_ready: bool | None = None
    """Whether the connector said it was connected to the hub and caught up (None: not known)."""
    edge_health: str = ""
    """The connector's readiness in words: what it waits for, or that it is caught up."""
    controller: ControllerStatus | None = None
    """The cluster controller's health, as the connector read it from the controller's
    heartbeat and sent it in its last inventory digest: ready and why, version, the replica
    that reconciles, watch sync, last error, and each replica (None: not known, or a
    simulated cluster)."""


class RolloutView(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    wave: int
    """The wave reached, from 0."""
    total_waves: int
    state: str
    """`progressing`, `halted` or `complete`."""
    applied: int
    targets: int
    failed: list[str] = msgspec.field(default_factory=list)
    reason: str = ""


class TasksetView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    digest: str
    format: str
    retired: bool
    placement: dict[str, Any]
    strategy: dict[str, Any]
    """How new versions spread (batch size, pause, failure threshold)."""
    rollout: RolloutView | None = None
    updated_at: str
    provenance: dict[str, Any] | None = None
    """Where the latest version was fetched from, for a remote source: kind, URL, chart and
    version, digest or commit."""
    shared: bool = False
    """Another project's, shared read-only with this one (placement and rollout not shown)."""


class FleetStatus(msgspec.Struct, frozen=True, kw_only=True):
    clusters: list[ClusterView]
    tasksets: list[TasksetView]
    cells: list[StatusRow]
    """One per (cluster, taskset) the scheduler placed: desired and applied version, state."""
    positions: dict[str, int]
    """The last sequence of each stream these views include."""


class WaveView(msgspec.Struct, frozen=True, kw_only=True):
    wave: int
    clusters: list[StatusRow]


class TasksetDetail(msgspec.Struct, frozen=True, kw_only=True):
    taskset: TasksetView
    versions: list[VersionRow]
    waves: list[WaveView]
    published_at: str
    published_by: str


class ClusterDetail(msgspec.Struct, frozen=True, kw_only=True):
    cluster: ClusterView
    cells: list[StatusRow]
    drift: list[AuditRow]
    """Drift detected and corrected on this cluster, newest first."""
    reports: list[AuditRow]
    """The cluster's latest reports, newest first."""


def rollout_view(row: RolloutRow | None) -> RolloutView | None:
    if row is None:
        return None
    return RolloutView(
        version=row.version,
        wave=row.wave,
        total_waves=row.total_waves,
        state=row.state,
        applied=row.applied,
        targets=row.targets,
        failed=row.failed,
        reason=row.reason,
    )


def taskset_view(row: TasksetRow, rollout: RolloutRow | None) -> TasksetView:
    return TasksetView(
        name=row.name,
        version=row.latest_version,
        digest=row.digest,
        format=row.format,
        retired=row.retired,
        placement=row.placement,
        strategy=row.rollout,
        rollout=rollout_view(rollout),
        updated_at=row.updated_at,
        provenance=row.provenance,
    )


def edge_fields(status: EdgeStatus | None) -> dict[str, Any]:
    if status is None:
        return {}
    return {
        "edge_version": status.version,
        "edge_ready": status.ready,
        "edge_health": status.reason,
        "controller": status.controller,
    }


def cluster_view(
    row: ClusterRow, seen: dict[str, datetime], edges: Mapping[str, EdgeStatus], now: datetime
) -> ClusterView:
    return ClusterView(
        name=row.name,
        labels=row.labels,
        registered_at=row.registered_at,
        connected=row.name in seen and now - seen[row.name] < CONNECTED_WITHIN,
        last_seen=seen.get(row.name),
        registered=row.registered,
        **edge_fields(edges.get(row.name)),
    )


def cluster_views(
    rows: list[ClusterRow], cells: list[StatusRow], hub: HubContext, now: datetime
) -> list[ClusterView]:
    seen = dict(hub.last_seen())
    edges = hub.edge_status()
    for cell in cells:
        if cell.last_report_at:
            reported = datetime.fromisoformat(cell.last_report_at)
            if cell.cluster not in seen or seen[cell.cluster] < reported:
                seen[cell.cluster] = reported
    return [
        ClusterView(
            name=row.name,
            labels=row.labels,
            registered_at=row.registered_at,
            connected=row.name in seen and now - seen[row.name] < CONNECTED_WITHIN,
            last_seen=seen.get(row.name),
            registered=row.registered,
            **edge_fields(edges.get(row.name)),
        )
        for row in rows
    ]


async def load_status(
    db: ProjectionDb, hub: HubContext, taskset: str | None, tenant: Tenant
) -> FleetStatus:
    cells = [c for c in await queries.fleet_status(db, taskset) if _owns_cell(tenant, c)]
    rollouts = {row.taskset: row for row in await queries.rollouts(db, taskset)}
    tasksets = [
        taskset_view(row, rollouts.get(row.name))
        for row in await queries.tasksets(db)
        if (taskset is None or row.name == taskset) and tenant.owns(row.name)
    ]
    all_cells = cells if taskset is None else await queries.fleet_status(db)
    rows = [row for row in await queries.clusters(db) if tenant.owns(row.name)]
    clusters = cluster_views(rows, all_cells, hub, datetime.now(UTC))
    return FleetStatus(
        clusters=clusters,
        tasksets=tasksets,
        cells=[cell for cell in cells if cell.state != "removed"],
        positions=await queries.positions(db),
    )


CACHED = (
    "Answers carry an ETag; `If-None-Match` with it gets 304 while nothing changed. Connected "
    "flags and last-seen times are at most a second old."
)


@get(
    "/api/v1/status",
    guards=[requires(Role.viewer)],
    tags=["fleet"],
    summary="The fleet matrix: every cluster, every taskset, and each placement's state",
    description=CACHED,
    responses={200: ResponseSpec(data_container=FleetStatus, description="The fleet matrix")},
)
async def fleet_status(
    request: Request[Any, Any, Any], hub: Hub, tenant: Tenant, taskset: FromQuery[str | None] = None
) -> Response[bytes]:
    shown = taskset
    if taskset is not None:
        taskset = tenant.full("taskset", taskset)

    async def build() -> bytes:
        async with hub.read_models() as db:
            status = await load_status(db, hub, taskset, tenant)
        if taskset is not None and not status.tasksets:
            raise NotFound(f"taskset {shown} has never been published")
        return msgspec.json.encode(status)

    key = ("status", taskset, tenant.view)
    answer = await hub.reads.answer(key, hub.read_generation(), build)
    return json_response(request, answer)


@get(
    "/api/v1/clusters",
    guards=[requires(Role.viewer)],
    tags=["clusters"],
    summary="Registered clusters, with labels and whether they are connected",
    description=CACHED,
    responses={200: ResponseSpec(data_container=list[ClusterView], description="The clusters")},
)
async def list_clusters(
    request: Request[Any, Any, Any],
    hub: Hub,
    tenant: Tenant,
    include_deregistered: Annotated[
        bool, QueryParameter(name="all", description="also list deregistered clusters")
    ] = False,
) -> Response[bytes]:
    async def build() -> bytes:
        async with hub.read_models() as db:
            cells = await queries.fleet_status(db)
            rows = await queries.clusters(db, include_deregistered=include_deregistered)
            rows = [row for row in rows if tenant.owns(row.name)]
            return msgspec.json.encode(cluster_views(rows, cells, hub, datetime.now(UTC)))

    answer = await hub.reads.answer(
        ("clusters", include_deregistered, tenant.view), hub.read_generation(), build
    )
    return json_response(request, answer)


@get(
    "/api/v1/clusters/{name:str}",
    guards=[requires(Role.viewer)],
    tags=["clusters"],
    summary="One cluster: its tasksets, latest reports and drift history",
)
async def cluster_detail(hub: Hub, tenant: Tenant, name: NameParam) -> ClusterDetail:
    shown, name = name, tenant.own("cluster", name)
    async with hub.read_models() as db:
        rows = [row for row in await queries.clusters(db) if row.name == name]
        if not rows:
            raise NotFound(f"cluster {shown} is not registered")
        cells = [c for c in await queries.fleet_status(db) if c.cluster == name]
        trail = await queries.audit_trail(db, cluster=name, limit=500)
    newest_first = list(reversed(trail))
    [view] = cluster_views(rows, cells, hub, datetime.now(UTC))
    return ClusterDetail(
        cluster=view,
        cells=[cell for cell in cells if cell.state != "removed"],
        drift=[row for row in newest_first if row.type in DRIFT_TYPES][:100],
        reports=[row for row in newest_first if row.stream == "REPORTS"][:20],
    )


@get(
    "/api/v1/tasksets",
    guards=[requires(Role.viewer)],
    tags=["tasksets"],
    summary="Published tasksets with their latest version and rollout",
)
async def list_tasksets(hub: Hub, tenant: Tenant) -> list[TasksetView]:
    async with hub.read_models() as db:
        rollouts = {row.taskset: row for row in await queries.rollouts(db)}
        return [
            taskset_view(row, rollouts.get(row.name))
            if tenant.owns(row.name)
            else as_shared(taskset_view(row, None))
            for row in await queries.tasksets(db)
            if tenant.owns_or_shared(row.name)
        ]


def as_shared(view: TasksetView) -> TasksetView:
    """Another project's shared taskset as this one sees it: its content and versions, not
    where its owner places it nor how its owner's rollout goes."""
    return msgspec.structs.replace(view, placement={}, rollout=None, shared=True)


@get(
    "/api/v1/tasksets/{name:str}",
    guards=[requires(Role.viewer)],
    tags=["tasksets"],
    summary="One taskset: versions, rollout waves and where each cluster stands",
)
async def taskset_detail(hub: Hub, tenant: Tenant, name: NameParam) -> TasksetDetail:
    shown, name = name, tenant.readable("taskset", name)
    if not tenant.owns(name):
        return await shared_taskset_detail(hub, tenant, name)
    async with hub.read_models() as db:
        rows = [row for row in await queries.tasksets(db) if row.name == name]
        if not rows:
            raise NotFound(f"taskset {shown} has never been published")
        rollouts = await queries.rollouts(db, name)
        versions = await queries.taskset_versions(db, name)
        cells = [c for c in await queries.fleet_status(db, name) if c.state != "removed"]
    by_wave: dict[int, list[StatusRow]] = {}
    for cell in cells:
        by_wave.setdefault(cell.wave or 0, []).append(cell)
    latest = versions[0] if versions else None
    return TasksetDetail(
        taskset=taskset_view(rows[0], rollouts[0] if rollouts else None),
        versions=versions,
        waves=[WaveView(wave=w, clusters=by_wave[w]) for w in sorted(by_wave)],
        published_at=latest.published_at if latest else rows[0].updated_at,
        published_by=latest.actor if latest else "",
    )


async def shared_taskset_detail(hub: Hub, tenant: Tenant, name: str) -> TasksetDetail:
    """A taskset another project shares: its versions, and where it runs in this project."""
    async with hub.read_models() as db:
        rows = [row for row in await queries.tasksets(db) if row.name == name]
        versions = await queries.taskset_versions(db, name)
        cells = [
            c
            for c in await queries.fleet_status(db, name)
            if c.state != "removed" and tenant.owns(c.cluster)
        ]
    if not rows:
        raise NotFound(f"taskset {name} has never been published")
    versions = [msgspec.structs.replace(v, actor="", event_id="") for v in versions]
    return TasksetDetail(
        taskset=as_shared(taskset_view(rows[0], None)),
        versions=versions,
        waves=[WaveView(wave=0, clusters=cells)] if cells else [],
        published_at=versions[0].published_at if versions else rows[0].updated_at,
        published_by="",
    )


@get(
    "/api/v1/clusters/{name:str}/state",
    guards=[requires(Role.viewer)],
    tags=["clusters"],
    summary="What a cluster should run, now or as of a past time (from the log)",
    description="Replays the log up to `at` through the scheduler's own decisions; every "
    "ClusterTask in force then, with Secret values masked.",
)
async def cluster_state(
    hub: Hub, tenant: Tenant, name: NameParam, at: FromQuery[datetime | None] = None
) -> dict[str, Any]:
    name = tenant.own("cluster", name)
    if hub.history is None:
        raise ServiceUnavailable("this hub cannot replay desired state")
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return await hub.history.state_at(name, at)


def _owns_cell(tenant: Tenant, cell: StatusRow) -> bool:
    return tenant.owns(cell.cluster) and tenant.owns_or_shared(cell.taskset)


async def collect_fleet_metrics(hub: HubContext) -> None:
    """Levels from the read models: clusters, rollout progress, placements by state."""
    try:
        async with hub.read_models() as db:
            cells = await queries.fleet_status(db)
            clusters = cluster_views(await queries.clusters(db), cells, hub, datetime.now(UTC))
            rollouts = await queries.rollouts(db)
    except (ProjectionMissing, ProjectionUnreadable):
        return  # the projector has not written its first batch yet
    metrics = hub.metrics
    metrics.clusters_registered.set(len(clusters))
    metrics.clusters_connected.set(sum(1 for c in clusters if c.connected))
    registered = [c for c in clusters if c.registered]
    metrics.clusters_edge_not_ready.set(sum(1 for c in registered if c.edge_ready is False))
    metrics.clusters_controller_not_ready.set(
        sum(1 for c in registered if c.controller is not None and not c.controller.ready)
    )
    metrics.rollout_progress.clear()
    for rollout in rollouts:
        ratio = rollout.applied / rollout.targets if rollout.targets else 1.0
        metrics.rollout_progress.labels(taskset=rollout.taskset).set(ratio)
    metrics.rollout_clusters.clear()
    counts = Counter((cell.taskset, cell.state) for cell in cells if cell.state != "removed")
    for (taskset, state), count in counts.items():
        metrics.rollout_clusters.labels(taskset=taskset, state=state).set(count)


class FleetSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The whole fleet in numbers, whatever page or filter is asked for."""

    clusters: int
    connected: int
    tasksets: int
    rolling_out: int
    halted: int
    drifted: int
    """Placements that reported drift (corrected or not)."""
    states: dict[str, int]
    """Placements per state (`pending`, `applied`, `failed`, `drifted`, ...)."""


class FleetPage(msgspec.Struct, frozen=True, kw_only=True):
    summary: FleetSummary
    tasksets: list[TasksetView]
    clusters: list[ClusterView]
    """The page of the clusters the filters select, by name."""
    cells: list[StatusRow]
    """The placements on the clusters of this page."""
    total: int
    """How many clusters the filters select in all."""
    offset: int
    limit: int
    positions: dict[str, int]


MAX_PAGE = 500


def cluster_query(
    q: str | None, selector: str | None, state: str | None, taskset: str | None
) -> ClusterQuery:
    """The filters of a fleet page as a query; a bad one raises a 400 naming it."""
    if state is not None and state not in CELL_STATES:
        raise InvalidRequest(f"state {state!r}: not one of {', '.join(CELL_STATES)}")
    if taskset is not None:
        check_name("taskset", taskset)
    tests: tuple[LabelTest, ...] = ()
    if selector is not None and selector.strip():
        parsed = parse_selector(selector)
        tests = tuple(
            LabelTest(key=r.key, operator=r.operator, values=r.values) for r in parsed.requirements
        )
    return ClusterQuery(
        name=(q or "").strip(), labels=tests, state=state or "", taskset=taskset or ""
    )


async def load_fleet_page(
    db: ProjectionDb,
    hub: HubContext,
    query: ClusterQuery,
    offset: int,
    limit: int,
    connected: bool | None,
    tenant: TenantScope,
) -> FleetPage:
    """One page of the clusters `query` selects (in `query.project`, the tenant's) and the
    summary of what the tenant sees."""
    now = datetime.now(UTC)
    seen = dict(hub.last_seen())
    for cluster, at in (await queries.last_reports(db)).items():
        reported = datetime.fromisoformat(at)
        if cluster not in seen or seen[cluster] < reported:
            seen[cluster] = reported
    edges = hub.edge_status()

    def is_connected(name: str) -> bool:
        return name in seen and now - seen[name] < CONNECTED_WITHIN

    everyone = await queries.cluster_names(db, ClusterQuery(project=query.project))
    if connected is None:
        rows, total = await queries.cluster_page(db, query, offset, limit)
    else:
        selected = [
            name
            for name in await queries.cluster_names(db, query)
            if is_connected(name) == connected
        ]
        total = len(selected)
        rows = await queries.clusters_named(db, selected[offset : offset + limit])
    rollouts = {row.taskset: row for row in await queries.rollouts(db)}
    tasksets = [
        taskset_view(row, rollouts.get(row.name))
        for row in await queries.tasksets(db)
        if tenant.owns(row.name)
    ]
    summary = FleetSummary(
        clusters=len(everyone),
        connected=sum(1 for name in everyone if is_connected(name)),
        tasksets=len(tasksets),
        rolling_out=sum(1 for t in tasksets if t.rollout and t.rollout.state == "progressing"),
        halted=sum(1 for t in tasksets if t.rollout and t.rollout.state == "halted"),
        drifted=await queries.drift_reported(db, query.project),
        states=await queries.state_counts(db, query.project),
    )
    return FleetPage(
        summary=summary,
        tasksets=tasksets,
        clusters=[cluster_view(row, seen, edges, now) for row in rows],
        cells=await queries.status_of_clusters(db, [row.name for row in rows]),
        total=total,
        offset=offset,
        limit=limit,
        positions=await queries.positions(db),
    )


@get(
    "/api/v1/fleet",
    guards=[requires(Role.viewer)],
    tags=["fleet"],
    summary="The fleet summarized, with one page of its clusters (filtered) and their placements",
    description=(
        "For fleets too large for the whole matrix (`/api/v1/status`): counts over the whole "
        "fleet, every taskset, and the clusters the filters select, `limit` at a time from "
        f"`offset` (by name, at most {MAX_PAGE} a page), each with its placements. Filters: `q` "
        "(part of the name), `selector` (a label selector), `state` (a placement in that "
        "state), `taskset` (placed there), `connected`. " + CACHED
    ),
    responses={200: ResponseSpec(data_container=FleetPage, description="The page")},
)
async def fleet_page(
    request: Request[Any, Any, Any],
    hub: Hub,
    tenant: Tenant,
    offset: Annotated[int, QueryParameter(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
    q: Annotated[str | None, QueryParameter(max_length=63)] = None,
    selector: Annotated[str | None, QueryParameter(max_length=1024)] = None,
    placement_state: Annotated[str | None, QueryParameter(name="state", max_length=32)] = None,
    taskset: Annotated[str | None, QueryParameter(max_length=63)] = None,
    connected: FromQuery[bool | None] = None,
) -> Response[bytes]:
    query = cluster_query(q, selector, placement_state, taskset)
    query = msgspec.structs.replace(
        query,
        taskset=tenant.readable("taskset", query.taskset) if query.taskset else "",
        project=None if tenant.whole_hub else tenant.name,
    )

    async def build() -> bytes:
        async with hub.read_models() as db:
            page = await load_fleet_page(db, hub, query, offset, limit, connected, tenant)
        return msgspec.json.encode(page)

    key = ("fleet", query, offset, limit, connected, tenant.view)
    answer = await hub.reads.answer(key, hub.read_generation(), build)
    return json_response(request, answer)


ROUTES = [
    fleet_status,
    fleet_page,
    list_clusters,
    cluster_detail,
    cluster_state,
    list_tasksets,
    taskset_detail,
]
