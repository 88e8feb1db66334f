"""`/api/v1/tokens`, `/api/v1/whoami`, `/api/v1/stream-tickets`: who may do what.

Tokens are shown once, in the answer that creates them; lists show names, roles and ids only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import JSONBody, PathParameter

from api.auth import (
    DEFAULT_ROTATION_GRACE,
    DEFAULT_TOKEN_LIFETIME,
    MAX_ROTATION_GRACE,
    MAX_TOKEN_LIFETIME,
    Principal,
    Role,
    TokenRecord,
    principal_of,
    requires,
)
from api.context import Hub

DEFAULT_LIFETIME_S = int(DEFAULT_TOKEN_LIFETIME.total_seconds())
LIFETIME_LIMIT_S = int(MAX_TOKEN_LIFETIME.total_seconds())
DEFAULT_GRACE_S = int(DEFAULT_ROTATION_GRACE.total_seconds())
GRACE_LIMIT_S = int(MAX_ROTATION_GRACE.total_seconds())


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str = ""
    expires_at: datetime | None = None
    rotated_at: datetime | None = None

    @classmethod
    def of(cls, record: TokenRecord) -> TokenInfo:
        return cls(
            id=record.id,
            name=record.name,
            role=record.role,
            created_at=record.created_at,
            created_by=record.created_by,
            expires_at=record.expires_at,
            rotated_at=record.rotated_at,
        )


class NewToken(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    name: Annotated[str, msgspec.Meta(max_length=63)] = ""
    """A DNS-1123 label naming the token; generated from the role when empty."""
    expires_in_seconds: Annotated[int, msgspec.Meta(ge=60, le=LIFETIME_LIMIT_S)] = (
        DEFAULT_LIFETIME_S
    )
    """How long the token lives (default 90 days, at most a year)."""


class Rotation(msgspec.Struct, frozen=True, kw_only=True):
    grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=GRACE_LIMIT_S)] = DEFAULT_GRACE_S
    """How long the old secret keeps working (default 5 minutes, at most a day)."""
    expires_in_seconds: Annotated[int, msgspec.Meta(ge=60, le=LIFETIME_LIMIT_S)] | None = None
    """The new secret's lifetime; by default the same as the old one's."""


class CreatedToken(msgspec.Struct, frozen=True, kw_only=True):
    token: str
    """The token itself. It is not stored and cannot be shown again."""
    info: TokenInfo


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: Role
    token_id: str

    @classmethod
    def of(cls, principal: Principal) -> Caller:
        return cls(name=principal.name, role=principal.role, token_id=principal.token_id)


class StreamTicket(msgspec.Struct, frozen=True, kw_only=True):
    ticket: str
    expires_at: datetime


@get(
    "/api/v1/tokens",
    guards=[requires(Role.admin)],
    tags=["tokens"],
    summary="List tokens",
)
async def list_tokens(hub: Hub) -> list[TokenInfo]:
    return [TokenInfo.of(record) for record in hub.tokens.list()]


@post(
    "/api/v1/tokens",
    guards=[requires(Role.admin)],
    tags=["tokens"],
    summary="Create a token",
)
async def create_token(
    request: Request[Any, Any, Any], hub: Hub, data: JSONBody[NewToken]
) -> CreatedToken:
    caller = principal_of(request)
    record, token = hub.tokens.create(
        role=data.role,
        name=data.name,
        created_by=caller.actor,
        lifetime=timedelta(seconds=data.expires_in_seconds),
        now=datetime.now(UTC),
    )
    return CreatedToken(token=token, info=TokenInfo.of(record))


@post(
    "/api/v1/tokens/{token:str}/rotate",
    guards=[requires(Role.admin)],
    tags=["tokens"],
    summary="Rotate a token (by id or name): a new secret, the old one valid for a grace period",
    status_code=200,
)
async def rotate_token(
    hub: Hub,
    token: Annotated[str, PathParameter(max_length=200)],
    data: JSONBody[Rotation],
) -> CreatedToken:
    lifetime = (
        timedelta(seconds=data.expires_in_seconds) if data.expires_in_seconds is not None else None
    )
    record, secret = hub.tokens.rotate(
        token, now=datetime.now(UTC), grace=timedelta(seconds=data.grace_seconds), lifetime=lifetime
    )
    return CreatedToken(token=secret, info=TokenInfo.of(record))


@delete(
    "/api/v1/tokens/{token:str}",
    guards=[requires(Role.admin)],
    tags=["tokens"],
    summary="Revoke a token (by id or name)",
    status_code=200,
)
async def revoke_token(hub: Hub, token: Annotated[str, PathParameter(max_length=200)]) -> TokenInfo:
    return TokenInfo.of(hub.tokens.revoke(token))


@get(
    "/api/v1/whoami",
    guards=[requires(Role.viewer)],
    tags=["tokens"],
    summary="The caller",
)
async def whoami(request: Request[Any, Any, Any]) -> Caller:
    return Caller.of(principal_of(request))


@post(
    "/api/v1/stream-tickets",
    guards=[requires(Role.viewer)],
    tags=["events"],
    summary="A one-minute ticket for opening the live event stream from a browser",
)
async def create_stream_ticket(request: Request[Any, Any, Any], hub: Hub) -> StreamTicket:
    ticket, expires = hub.tickets.issue(principal_of(request), now=datetime.now(UTC))
    return StreamTicket(ticket=ticket, expires_at=expires)


ROUTES = [list_tokens, create_token, rotate_token, revoke_token, whoami, create_stream_ticket]
