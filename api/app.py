"""The ASGI application of the hub.

Litestar, because it speaks msgspec natively: the event catalog's Structs are the request and
response types, and the OpenAPI document is derived from them.
"""

from __future__ import annotations

from litestar import Litestar, get


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    return Litestar(route_handlers=[healthz], openapi_config=None)
