"""`/healthz` (public), `/metrics` (Prometheus; needs a viewer token), the snapshots of the
scheduler's fold (`GET` for viewers, `POST` to take one now for admins) and the hub's leases
(which process runs the once-per-hub services, which the scheduler).

`/metrics` is not public because its labels name tasksets and clusters, which say what runs
where. Prometheus sends a token with `authorization: {credentials_file: ...}` in its scrape
config; create one with `fleetbus token create --role viewer --name prometheus`. An org-level
token gets every series; a project's token only the series about its own tasksets and clusters
(`project_series`), none of the hub-wide ones.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Response, get, post

from api.auth import PUBLIC, Role, requires
from api.context import Hub, HubContext
from api.errors import ServiceUnavailable
from api.metrics import CONTENT_TYPE
from api.routes.fleet import collect_fleet_metrics
from api.tenancy import Tenant
from events.errors import AppendRefused, EventLogError
from events.port import JetStreamPort
from events.streams import DESIRED_STREAM, EVENTS_STREAM, LEASES_STREAM, REPORTS_STREAM


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    event_log: str


@get(
    "/healthz",
    opt={PUBLIC: True},
    tags=["system"],
    summary="Liveness and readiness: 200 when the event log answers, 503 when not",
)
async def healthz(hub: Hub) -> Response[Health]:
    try:
        await hub.store.last_sequence()
    except EventLogError as e:
        return Response(Health(status="unavailable", event_log=str(e)), status_code=503)
    return Response(Health(status="ok", event_log="ok"))


@get(
    "/metrics",
    guards=[requires(Role.viewer)],
    tags=["system"],
    summary="Prometheus metrics (text exposition format); a project's token gets its own series",
    media_type=CONTENT_TYPE,
)
async def metrics(hub: Hub, tenant: Tenant) -> Response[bytes]:
    await hub.metrics.collect_streams(hub.store, [EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM])
    await collect_fleet_metrics(hub)
    exposition = hub.metrics.exposition()
    if not tenant.principal.org_level:
        exposition = project_series(exposition, tenant)
    return Response(exposition, media_type=CONTENT_TYPE)


_NAME_LABEL = re.compile(r'\b(taskset|cluster)="((?:[^"\\]|\\.)*)"')


def project_series(exposition: bytes, tenant: Tenant) -> bytes:
    """Only the samples naming the project's own tasksets or clusters (and no other's), with
    the HELP and TYPE lines of the families that keep any."""
    kept: list[str] = []
    header: list[str] = []
    for line in exposition.decode().splitlines():
        if line.startswith("#"):
            if line.startswith("# HELP"):
                header = []
            header.append(line)
            continue
        names = [value for _, value in _NAME_LABEL.findall(line)]
        if names and all(tenant.owns(name) for name in names):
            kept.extend(header)
            header = []
            kept.append(line)
    return ("\n".join(kept) + "\n").encode() if kept else b""


@get(
    "/api/v1/snapshots",
    guards=[requires(Role.viewer, org=True)],
    tags=["system"],
    summary="Snapshots of the scheduler's fold, newest first",
    description="Each covers EVENTS up to `eventsSequence` (stored at `eventsTime`) and "
    "REPORTS up to `reportsSequence`; the scheduler and `state --at` start from them.",
)
async def list_snapshots(hub: Hub) -> dict[str, Any]:
    if hub.snapshots is None:
        raise ServiceUnavailable("this hub keeps no snapshots")
    return {"snapshots": await hub.snapshots.listing()}


@post(
    "/api/v1/snapshots",
    guards=[requires(Role.admin, org=True)],
    tags=["system"],
    summary="Take a snapshot of the log now",
    description="Folds the log from the newest snapshot on and stores a new one; answers with "
    "it (or with the snapshot that already covers the log). `snapshot` is null for an empty "
    "log.",
    status_code=200,
)
async def take_snapshot(hub: Hub) -> dict[str, Any]:
    if hub.snapshots is None:
        raise ServiceUnavailable("this hub keeps no snapshots")
    return {"snapshot": await hub.snapshots.take()}


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    lease: str
    holder: str
    renewedAt: str
    """When the holder last wrote it: a lease not renewed within its TTL lapses."""


LEASE_SUBJECTS = "fleet.lease.>"
MAX_LEASES = 64


@get(
    "/api/v1/leases",
    guards=[requires(Role.viewer, org=True)],
    tags=["system"],
    summary="Which process holds each of the hub's leases",
    description="`hub`: the `fleetbus up` process running the once-per-hub services (on a "
    "NATS cluster; a standby takes it over when it lapses); `scheduler`: the scheduler "
    "deciding placements. A lease not listed is held by nobody.",
)
async def list_leases(hub: Hub) -> dict[str, list[Lease]]:
    try:
        replies = await JetStreamPort(hub.store.api).last_per_subject(
            LEASES_STREAM, LEASE_SUBJECTS, MAX_LEASES
        )
    except EventLogError as e:
        if not await _stream_exists(hub, LEASES_STREAM):
            return {"leases": []}  # a hub that never held a lease
        raise ServiceUnavailable(f"the hub's leases cannot be read: {e}") from e
    leases = []
    for reply in replies:
        body = reply.json()
        leases.append(
            Lease(
                lease=reply.headers.get("Nats-Subject", "").removeprefix("fleet.lease."),
                holder=str(body.get("holder", "")) if isinstance(body, dict) else "",
                renewedAt=reply.headers.get("Nats-Time-Stamp", ""),
            )
        )
    return {"leases": sorted(leases, key=lambda lease: lease.lease)}


async def _stream_exists(hub: HubContext, stream: str) -> bool:
    try:
        await hub.store.stream_info(stream)
    except AppendRefused as e:
        if "(code 10059)" in str(e):  # stream not found
            return False
        raise ServiceUnavailable(f"stream {stream} cannot be read: {e}") from e
    except EventLogError as e:
        raise ServiceUnavailable(f"stream {stream} cannot be read: {e}") from e
    return True


ROUTES = [healthz, metrics, list_snapshots, take_snapshot, list_leases]
