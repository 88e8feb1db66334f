"""`/healthz` (public) and `/metrics` (Prometheus; needs a viewer token).

`/metrics` is not public because its labels name tasksets and clusters, which say what runs
where. Prometheus sends a token with `authorization: {credentials_file: ...}` in its scrape
config; create one with `fleetbus token create --role viewer --name prometheus`.
"""

from __future__ import annotations

import msgspec
from litestar import Response, get

from api.auth import PUBLIC, Role, requires
from api.context import Hub
from api.metrics import CONTENT_TYPE
from api.routes.fleet import collect_fleet_metrics
from events.errors import EventLogError
from events.streams import DESIRED_STREAM, EVENTS_STREAM, REPORTS_STREAM


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
    summary="Prometheus metrics (text exposition format)",
    media_type=CONTENT_TYPE,
)
async def metrics(hub: Hub) -> Response[bytes]:
    await hub.metrics.collect_streams(hub.store, [EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM])
    await collect_fleet_metrics(hub)
    return Response(hub.metrics.exposition(), media_type=CONTENT_TYPE)


ROUTES = [healthz, metrics]
