"""Who may call the API: bearer tokens with a role, stored hashed in the hub's data dir.

A token is `fbt_<id>_<secret>`: the id names the token (in lists, in revocation, in the
`actor` of every event it causes) and the secret is 256 random bits. Only the SHA-256 of the
whole token is kept in `tokens.json` (mode 0600); a high-entropy secret needs no slow hash, and
comparing digests with `hmac.compare_digest` keeps the check constant-time.

Roles are ordered: a viewer reads; a publisher also publishes, retires and overrides; an admin
also manages clusters and tokens. Every route needs at least a viewer's token unless it opts out
(`/healthz`, the OpenAPI document, the dashboard's static files).

Browsers cannot put a header on an `EventSource`, so the live event stream also accepts a
*stream ticket* in its query string: an HMAC-signed, one-minute credential naming the token it
was issued for, useless for any other route and dead once the token is revoked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from access.private_files import write_private
from api.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from taskset.errors import InvalidName
from taskset.names import check_name

TOKEN_PREFIX = "fbt_"
ADMIN_TOKEN_NAME = "admin"


class Role(StrEnum):
    viewer = "viewer"
    publisher = "publisher"
    admin = "admin"


ROLE_RANK = {Role.viewer: 1, Role.publisher: 2, Role.admin: 3}


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A token as the hub keeps it: never the token itself, only its digest."""

    id: str
    name: str
    role: Role
    sha256: str
    created_at: datetime
    created_by: str = ""


class TokenFile(msgspec.Struct, kw_only=True):
    tokens: list[TokenRecord] = msgspec.field(default_factory=list)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller of a request, as its token says."""

    token_id: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """The `actor` of the events this caller causes."""
        return f"user:{self.name}"

    def may(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The hub's tokens, in `tokens.json` next to the rest of its data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: list[TokenRecord] = []
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._records = []
            return
        try:
            self._records = list(msgspec.json.decode(raw, type=TokenFile).tokens)
        except msgspec.DecodeError as e:
            raise InvalidRequest(f"{self.path} is not a valid token file: {e}") from e

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, msgspec.json.encode(TokenFile(tokens=self._records)))

    def list(self) -> list[TokenRecord]:
        return list(self._records)

    def create(
        self, *, role: Role, name: str = "", created_by: str = "", now: datetime
    ) -> tuple[TokenRecord, str]:
        """A new token: its record, and the token itself (shown once, never stored)."""
        token_id = secrets.token_hex(6)
        name = name or f"{role.value}-{token_id[:6]}"
        try:
            check_name("token", name)
        except InvalidName as e:
            raise InvalidRequest(str(e), {"name": name}) from e
        if any(record.name == name for record in self._records):
            raise Conflict(f"a token named {name!r} exists already; revoke it or pick another name")
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(
            id=token_id,
            name=name,
            role=role,
            sha256=token_digest(token),
            created_at=now,
            created_by=created_by,
        )
        self._records.append(record)
        self._save()
        return record, token

    def revoke(self, id_or_name: str) -> TokenRecord:
        for record in self._records:
            if id_or_name in (record.id, record.name):
                self._records.remove(record)
                self._save()
                return record
        raise NotFound(f"no token with id or name {id_or_name!r}")

    def find(self, token_id: str) -> TokenRecord | None:
        for record in self._records:
            if record.id == token_id:
                return record
        return None

    def authenticate(self, token: str) -> Principal | None:
        """The principal a presented token stands for, or None if it is not a live token."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        token_id, sep, _ = token[len(TOKEN_PREFIX) :].partition("_")
        record = self.find(token_id) if sep else None
        presented = token_digest(token)
        expected = record.sha256 if record is not None else "0" * 64
        if not hmac.compare_digest(presented, expected) or record is None:
            return None
        return Principal(token_id=record.id, name=record.name, role=record.role)

    def ensure_admin_token(self, path: Path, *, now: datetime) -> str:
        """The admin token kept in `path` (0600), created when missing or no longer valid."""
        try:
            existing = path.read_text().strip()
        except FileNotFoundError:
            existing = ""
        if existing:
            principal = self.authenticate(existing)
            if principal is not None and principal.role is Role.admin:
                return existing
        self._records = [r for r in self._records if r.name != ADMIN_TOKEN_NAME]
        _, token = self.create(
            role=Role.admin, name=ADMIN_TOKEN_NAME, created_by="fleetbus up", now=now
        )
        write_private(path, (token + "\n").encode())
        return token


class StreamTickets:
    """Short-lived, signed credentials for opening the live event stream from a browser."""

    def __init__(self, key: bytes | None = None, ttl: timedelta = timedelta(seconds=60)) -> None:
        self._key = key or secrets.token_bytes(32)
        self.ttl = ttl

    def issue(self, principal: Principal, *, now: datetime) -> tuple[str, datetime]:
        expires = now + self.ttl
        payload = f"{principal.token_id}.{int(expires.timestamp())}".encode()
        signature = hmac.new(self._key, payload, hashlib.sha256).digest()
        ticket = _b64(payload) + "." + _b64(signature)
        return ticket, expires

    def verify(self, ticket: str, tokens: TokenStore, *, now: datetime) -> Principal | None:
        encoded_payload, sep, encoded_signature = ticket.partition(".")
        if not sep:
            return None
        try:
            payload = _unb64(encoded_payload)
            signature = _unb64(encoded_signature)
        except ValueError:
            return None
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            return None
        token_id, _, expires_text = payload.decode(errors="replace").partition(".")
        if not expires_text.isdigit() or int(expires_text) < now.timestamp():
            return None
        record = tokens.find(token_id)
        if record is None:
            return None
        return Principal(token_id=record.id, name=record.name, role=record.role)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise ValueError(str(e)) from e


PUBLIC = "public"
"""Route `opt` key: the route needs no token."""
ACCEPTS_TICKET = "accepts_stream_ticket"
"""Route `opt` key: the route also accepts a `ticket` query parameter."""


class TokenAuthentication(AbstractAuthenticationMiddleware):
    """Resolves the caller of every request that is not marked public; 401 when it cannot."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenStore,
        tickets: StreamTickets,
        exclude: list[str] | None = None,
    ) -> None:
        super().__init__(app, exclude=exclude, exclude_from_auth_key=PUBLIC)
        self.tokens = tokens
        self.tickets = tickets

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if header and scheme.lower() == "bearer" and credential.strip():
            principal = self.tokens.authenticate(credential.strip())
            if principal is None:
                raise Unauthorized("the bearer token is not valid (revoked, mistyped or unknown)")
            return AuthenticationResult(user=principal, auth=credential)
        ticket = connection.query_params.get("ticket")
        if ticket and connection.route_handler.opt.get(ACCEPTS_TICKET):
            principal = self.tickets.verify(ticket, self.tokens, now=datetime.now(UTC))
            if principal is None:
                raise Unauthorized("the stream ticket is not valid or has expired; get a new one")
            return AuthenticationResult(user=principal, auth=ticket)
        raise Unauthorized(
            "this needs a token: send `Authorization: Bearer <token>` (`fleetbus token create` "
            "makes one; the hub's admin token is in <data-dir>/admin.token)"
        )


def requires(role: Role) -> Any:
    """A route guard letting through callers whose role is at least `role`."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.user
        if not isinstance(principal, Principal):
            raise Unauthorized("this needs a token")
        if not principal.may(role):
            raise Forbidden(
                f"this needs the {role.value} role; token {principal.name!r} is a "
                f"{principal.role.value}",
                {"required": role.value, "role": principal.role.value},
            )

    guard.__name__ = f"requires_{role.value}"
    return guard


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.user
    if not isinstance(principal, Principal):
        raise Unauthorized("this needs a token")
    return principal
