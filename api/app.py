"""The ASGI application of the hub: the HTTP API under /api/v1, the dashboard at /, /metrics.

Litestar, because it speaks msgspec natively: request and response bodies are the same frozen
msgspec Structs the rest of fleetbus uses (the event catalog, the Taskset), they are validated
and encoded by msgspec without a second model layer (no pydantic twins to keep in sync), and the
OpenAPI document at /api/v1/openapi.json is derived from those types, so it cannot drift from
what the handlers accept.

Everything the handlers need comes in one `HubContext`; there is no module-level state, so tests
build as many apps as they like against their own stores and data dirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from api.auth import PUBLIC, Principal, TokenAuthentication
from api.context import HubContext
from api.errors import EXCEPTION_HANDLERS, status_for
from api.metrics import HubMetrics, NotificationCollector, observe_streams
from api.routes import (
    access,
    blueprints,
    charts,
    clusters,
    events,
    fleet,
    keys,
    notifications,
    overrides,
    projects,
    rollouts,
    sources,
    system,
    tasksets,
)
from api.tenancy import provide_tenant
from events.tasks import cancel_and_wait

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
API_VERSION = "1"
OPENAPI_PATH = "/api/v1/openapi.json"

access_log = logging.getLogger("api.access")


class RequestLog:
    """ASGI middleware: one structured log line and metric observation per request."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self._observe(scope, status, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        except Exception as error:
            # Raised before any response (auth, guards): the handler outside answers it.
            status = error.status_code if isinstance(error, HTTPException) else status_for(error)
            self._observe(scope, status, time.perf_counter() - started)
            raise
        finally:
            user = scope.get("user")
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "actor": user.actor if isinstance(user, Principal) else "",
                },
            )

    def _observe(self, scope: HTTPScope, status: int, seconds: float) -> None:
        route = str(scope.get("path_template") or "unmatched")
        self.metrics.http_requests.labels(
            method=scope["method"], route=route, status=str(status)
        ).inc()
        self.metrics.http_request_duration.labels(route=route).observe(seconds)


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="fleetbus hub API",
        version=API_VERSION,
        description="Publish tasksets, customise them per cluster, register clusters, and "
        "follow the fleet. Every route but /healthz and this document needs "
        "`Authorization: Bearer <token>` (a fleetbus token, or a JWT of the hub's OIDC issuer); "
        "roles: viewer (read), publisher (publish, retire, overrides), admin (clusters, "
        "tokens). A request acts in one project: `X-Fleetbus-Project`, else the token's own, "
        "else `default`; another project's objects answer as if they did not exist.",
        path=OPENAPI_PATH,
        render_plugins=[JsonRenderPlugin(path="/")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A fleetbus token (fbt_...)",
                )
            }
        ),
        security=[{"bearer": []}],
        use_handler_docstrings=False,
    )


def create_app(hub: HubContext) -> Litestar:
    """The hub's HTTP application over `hub` (store, data dir, tokens, read models, services)."""

    @contextlib.asynccontextmanager
    async def observe_metrics(_: Litestar) -> AsyncIterator[None]:
        observer = asyncio.create_task(
            observe_streams(hub.metrics, [("EVENTS", hub.store), ("REPORTS", hub.reports)]),
            name="metrics-observer",
        )
        try:
            yield
        finally:
            hub.shutdown.set()
            await cancel_and_wait([observer])

    def provide_hub() -> HubContext:
        return hub

    if hub.notifications is not None:
        hub.metrics.registry.register(NotificationCollector(hub.notifications))

    dashboard = create_static_files_router(
        path="/",
        directories=[DASHBOARD_DIR],
        html_mode=True,
        opt={PUBLIC: True},
        include_in_schema=False,
        name="dashboard",
    )
    return Litestar(
        route_handlers=[
            *system.ROUTES,
            *events.ROUTES,
            *access.ROUTES,
            *tasksets.ROUTES,
            *fleet.ROUTES,
            *clusters.ROUTES,
            *overrides.ROUTES,
            *rollouts.ROUTES,
            *blueprints.ROUTES,
            *notifications.ROUTES,
            *sources.ROUTES,
            *keys.ROUTES,
            *charts.ROUTES,
            *projects.ROUTES,
            dashboard,
        ],
        dependencies={
            "hub": Provide(provide_hub, sync_to_thread=False),
            "tenant": Provide(provide_tenant),
        },
        middleware=[
            DefineMiddleware(RequestLog, metrics=hub.metrics),
            DefineMiddleware(
                TokenAuthentication,
                tokens=hub.tokens,
                tickets=hub.tickets,
                exclude=[f"^{OPENAPI_PATH}"],
                sso=lambda: hub.sso,
            ),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi_config(),
        # Logging is the process's to configure (`fleetbus.jsonlog`): Litestar's default config
        # would replace the root handlers with its own queue listener on stderr.
        logging_config=None,
        request_max_body_size=hub.max_body_bytes,
        lifespan=[observe_metrics],
        debug=False,
    )


def describe_routes(app: Litestar) -> list[dict[str, Any]]:
    """Every route with its methods and whether it is public (for tests and docs)."""
    routes: list[dict[str, Any]] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            routes.append(
                {
                    "path": route.path,
                    "methods": sorted(handler.http_methods),
                    "public": bool(handler.opt.get(PUBLIC)),
                }
            )
    return routes
