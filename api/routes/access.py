"""`/api/v1/tokens`, `/api/v1/whoami`, `/api/v1/stream-tickets`: who may do what.

Tokens are shown once, in the answer that creates them; lists show names, roles and ids only.
A project's admins manage that project's tokens; org admins manage every token, and alone make
org-level ones.
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
    Role,
    TokenRecord,
    principal_of,
    requires,
)
from api.context import Hub
from api.errors import Forbidden
from api.tenancy import Tenant
from taskset.projects import DEFAULT_PROJECT

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
    project: str | None = None
    """The project it acts in; null for an org-level token."""

    @classmethod
    def of(cls, record: TokenRecord) -> TokenInfo:
        return cls(
            id=record.id,
            name=record.name,
            role=record.role,
            project=record.project,
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
    org_level: bool | None = None
    """True: an org-level token (org admins only); false: a token of the request's project;
    unset: org-level when an org admin asks in the default project, else the project's."""


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
    """The role held in `project`."""
    token_id: str
    project: str = DEFAULT_PROJECT
    """The project this request acted in."""
    org_level: bool = True
    grants: dict[str, Role] = msgspec.field(default_factory=dict)
    """Roles in further projects (single sign-on users)."""

    @classmethod
    def of(cls, tenant: Tenant) -> Caller:
        principal = tenant.principal
        return cls(
            name=principal.name,
            role=principal.role_in(tenant.name) or principal.role,
            token_id=principal.token_id,
            project=tenant.name,
            org_level=principal.org_level,
            grants=dict(principal.grants),
        )


def token_scope(tenant: Tenant) -> str | None:
    """Which tokens a request may manage: every one (None), or its project's."""
    return None if tenant.whole_hub else tenant.name


class StreamTicket(msgspec.Struct, frozen=True, kw_only=True):
    ticket: str
    expires_at: datetime


@get(
    "/api/v1/tokens",
    guards=[requires(Role.admin)],
    tags=["tokens"],
    summary="List tokens",
)
async def list_tokens(hub: Hub, tenant: Tenant) -> list[TokenInfo]:
    return [TokenInfo.of(record) for record in await hub.tokens.list(token_scope(tenant))]


@post(
    "/api/v1/tokens",
    guards=[requires(Role.admin)],
    tags=["tokens"],
    summary="Create a token",
)
async def create_token(hub: Hub, tenant: Tenant, data: JSONBody[NewToken]) -> CreatedToken:
    caller = tenant.principal
    org_level = data.org_level if data.org_level is not None else tenant.whole_hub
    if org_level and not caller.is_org_admin:
        raise Forbidden(
            f"only org admins make org-level tokens; {caller.name!r} may make tokens of "
            f"project {tenant.name} (`org_level: false`)",
            {"required": "org admin"},
        )
    record, token = await hub.tokens.create(
        role=data.role,
        name=data.name,
        created_by=caller.actor,
        lifetime=timedelta(seconds=data.expires_in_seconds),
        project=None if org_level else tenant.name,
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
    tenant: Tenant,
    token: Annotated[str, PathParameter(max_length=200)],
    data: JSONBody[Rotation],
) -> CreatedToken:
    lifetime = (
        timedelta(seconds=data.expires_in_seconds) if data.expires_in_seconds is not None else None
    )
    record, secret = await hub.tokens.rotate(
        token,
        now=datetime.now(UTC),
        grace=timedelta(seconds=data.grace_seconds),
        lifetime=lifetime,
        project=token_scope(tenant),
    )
    return CreatedToken(token=secret, info=TokenInfo.of(record))


@delete(
    "/api/v1/tokens/{token:str}",
    guards=[requires(Role.admin)],
    tags=["tokens"],
    summary="Revoke a token (by id or name)",
    status_code=200,
)
async def revoke_token(
    hub: Hub, tenant: Tenant, token: Annotated[str, PathParameter(max_length=200)]
) -> TokenInfo:
    return TokenInfo.of(await hub.tokens.revoke(token, token_scope(tenant)))


@get(
    "/api/v1/whoami",
    guards=[requires(Role.viewer)],
    tags=["tokens"],
    summary="The caller",
)
async def whoami(tenant: Tenant) -> Caller:
    return Caller.of(tenant)


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
