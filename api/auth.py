"""Who may call the API: bearer tokens with a role, stored hashed.

A token is `fbt_<id>_<secret>`: the id names the token (in lists, in revocation, in the
`actor` of every event it causes) and the secret is 256 random bits. Only the SHA-256 of the
whole token is kept, in a `TokenTable`: the hub's TOKENS stream, shared by every API process
(`api.token_stream`), or a single hub's `tokens.json` (mode 0600); a high-entropy secret needs
no slow hash, and comparing digests with `hmac.compare_digest` keeps the check constant-time.

Tokens expire: `expires_at` is set when a token is made (90 days unless asked otherwise, at most a
year; the hub's own admin token lives 30 days and `fleetbus up` replaces it when it has expired).
Rotating a token gives it a new secret under the same id, name and role; the old secret keeps
working for a grace period (5 minutes by default) so running clients can switch, then dies.
Rotating the admin token also rewrites `<data-dir>/admin.token`.

Roles are ordered: a viewer reads; a publisher also publishes, retires and overrides; an admin
also manages clusters and tokens. Every route needs at least a viewer's token unless it opts out
(`/healthz`, the OpenAPI document, the dashboard's static files).

A token belongs to a project (`taskset.projects`) and holds its role there only; a token with
no project is org-level and holds its role in every project (tokens made before projects
existed are org-level). An org-level admin is the org admin: it creates projects and alone may
use the hub-wide routes (keys, snapshots, notifications, source credentials). Each
request acts in one project: the `X-Fleetbus-Project` header (or `project` query parameter)
names it, else the token's own project, else `default`; a project token naming another project
is refused. Token names are unique per project.

Browsers cannot put a header on an `EventSource`, so the live event stream also accepts a
*stream ticket* in its query string: an HMAC-signed, one-minute credential naming the token it
was issued for, useless for any other route and dead once the token is revoked (a single sign-on
user's ticket carries their roles instead: there is no token to name).

Beside its own tokens the hub may accept bearer JWTs of an OIDC issuer (`SingleSignOn`,
`api.oidc`): a credential shaped like a JWT goes there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from access.private_files import write_private
from api.errors import Conflict, FieldProblem, Forbidden, InvalidRequest, NotFound, Unauthorized
from taskset.errors import InvalidName
from taskset.names import check_name
from taskset.projects import DEFAULT_PROJECT, check_project_name

TOKEN_PREFIX = "fbt_"
ADMIN_TOKEN_NAME = "admin"
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
ADMIN_TOKEN_LIFETIME = timedelta(days=30)
MAX_TOKEN_LIFETIME = timedelta(days=365)
DEFAULT_ROTATION_GRACE = timedelta(minutes=5)
MAX_ROTATION_GRACE = timedelta(days=1)


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
    project: str | None = None
    """The project the token acts in; None for an org-level token (its role in every project)."""
    sha256: str
    created_at: datetime
    created_by: str = ""
    expires_at: datetime | None = None
    """None only for tokens made before tokens expired; they keep working until rotated."""
    rotated_at: datetime | None = None
    previous_sha256: str = ""
    """The digest of the secret before the last rotation, valid until `previous_valid_until`."""
    previous_valid_until: datetime | None = None

    def accepts(self, digest: str, now: datetime) -> bool:
        """Whether a presented token with this digest is live at `now` (constant-time compare)."""
        current = hmac.compare_digest(digest, self.sha256)
        previous = bool(self.previous_sha256) and hmac.compare_digest(digest, self.previous_sha256)
        if current:
            return self.expires_at is None or now < self.expires_at
        return (
            previous and self.previous_valid_until is not None and now < self.previous_valid_until
        )


class TokenFile(msgspec.Struct, kw_only=True):
    tokens: list[TokenRecord] = msgspec.field(default_factory=list)


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller of a request, as its token (or single sign-on identity) says."""

    token_id: str
    name: str
    role: Role
    """The role it holds: in every project when org-level, else in `project`."""
    project: str | None = None
    """The one project a project token acts in; None: org-level (or per `grants`)."""
    grants: dict[str, Role] = msgspec.field(default_factory=dict)
    """Roles per project beyond `role` (single sign-on users, from their groups)."""
    org_level: bool = True
    """Whether `role` holds in every project (False for project tokens and SSO users
    without an org group)."""

    @property
    def actor(self) -> str:
        """The `actor` of the events this caller causes."""
        return f"user:{self.name}" if self.project is None else f"user:{self.project}--{self.name}"

    def role_in(self, project: str) -> Role | None:
        """The role this caller holds in `project` (None: none at all)."""
        held = [self.role] if self.org_level else []
        if self.project == project:
            held.append(self.role)
        if project in self.grants:
            held.append(self.grants[project])
        return max(held, key=ROLE_RANK.__getitem__) if held else None

    def may(self, role: Role, project: str = DEFAULT_PROJECT) -> bool:
        held = self.role_in(project)
        return held is not None and ROLE_RANK[held] >= ROLE_RANK[role]

    @property
    def is_org_admin(self) -> bool:
        return self.org_level and self.role is Role.admin


def token_principal(record: TokenRecord) -> Principal:
    return Principal(
        token_id=record.id,
        name=record.name,
        role=record.role,
        project=record.project,
        org_level=record.project is None,
    )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable(Protocol):
    """Where token records are kept: one hub's `tokens.json` (`TokenFileTable`), or the
    TOKENS stream every API replica shares (`api.token_stream.SharedTokenTable`)."""

    async def records(self) -> list[TokenRecord]:
        """Every record, as stored now."""
        ...

    async def record(self, token_id: str) -> TokenRecord | None:
        """The record with this id as stored now (None: no such token)."""
        ...

    async def put(self, record: TokenRecord, *, replacing: TokenRecord | None) -> None:
        """Store `record`: a new token (`replacing` None), or a new state of `replacing`;
        `Conflict` when another writer changed or created it first."""
        ...

    async def remove(self, record: TokenRecord) -> None: ...


class TokenFileTable:
    """The tokens of one hub in one file (mode 0600), read once and rewritten whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records = read_token_file(path)

    async def records(self) -> list[TokenRecord]:
        return list(self._records)

    async def record(self, token_id: str) -> TokenRecord | None:
        return next((r for r in self._records if r.id == token_id), None)

    async def put(self, record: TokenRecord, *, replacing: TokenRecord | None) -> None:
        if replacing is not None and replacing in self._records:
            self._records[self._records.index(replacing)] = record
        else:
            self._records.append(record)
        self._save()

    async def remove(self, record: TokenRecord) -> None:
        self._records = [r for r in self._records if r.id != record.id]
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, msgspec.json.encode(TokenFile(tokens=self._records)))


def read_token_file(path: Path) -> list[TokenRecord]:
    """The records of a `tokens.json` (none when it does not exist)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        return list(msgspec.json.decode(raw, type=TokenFile).tokens)
    except msgspec.DecodeError as e:
        raise InvalidRequest(f"{path} is not a valid token file: {e}") from e


class TokenStore:
    """The hub's tokens: decisions here, records in a `TokenTable`.

    Every read goes to the table, so a token made, rotated or revoked through one API replica
    is known at once to every other replica sharing the table."""

    def __init__(self, table: TokenTable | Path) -> None:
        self.table: TokenTable = TokenFileTable(table) if isinstance(table, Path) else table
        self.admin_token_path: Path | None = None
        """Where the hub keeps its admin token; rotating the admin token rewrites it."""

    async def list(self, project: str | None = None) -> list[TokenRecord]:
        """Every token, or only the tokens of `project`."""
        records = await self.table.records()
        return [r for r in records if project is None or r.project == project]

    async def create(
        self,
        *,
        role: Role,
        name: str = "",
        created_by: str = "",
        lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
        project: str | None = None,
        now: datetime,
    ) -> tuple[TokenRecord, str]:
        """A new token: its record, and the token itself (shown once, never stored).

        `project` None makes an org-level token; names are unique per project."""
        _check_lifetime(lifetime)
        if project is not None:
            try:
                check_project_name(project)
            except InvalidName as e:
                raise InvalidRequest(str(e), {"project": project}) from e
        token_id = secrets.token_hex(6)
        name = name or f"{role.value}-{token_id[:6]}"
        try:
            check_name("token", name)
        except InvalidName as e:
            raise InvalidRequest(str(e), {"name": name}) from e
        if any(r.name == name and r.project == project for r in await self.table.records()):
            where = f"in project {project}" if project else "at org level"
            raise Conflict(
                f"a token named {name!r} exists already {where}; revoke it or pick another name"
            )
        token = _new_token(token_id)
        record = TokenRecord(
            id=token_id,
            name=name,
            role=role,
            sha256=token_digest(token),
            created_at=now,
            created_by=created_by,
            expires_at=now + lifetime,
            project=project,
        )
        await self.table.put(record, replacing=None)
        return record, token

    async def rotate(
        self,
        id_or_name: str,
        *,
        now: datetime,
        grace: timedelta = DEFAULT_ROTATION_GRACE,
        lifetime: timedelta | None = None,
        project: str | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new secret for a token (of `project` only, when given); the old one stays valid
        for `grace`, then dies."""
        if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
            raise InvalidRequest(
                f"grace must be from 0 to {int(MAX_ROTATION_GRACE.total_seconds())} seconds, "
                f"got {grace.total_seconds():g}",
                errors=[_problem("grace_seconds", "from 0 to 86400", grace.total_seconds())],
            )
        record = await self._find_by_id_or_name(id_or_name, project)
        if lifetime is None:
            previous = (
                record.expires_at - (record.rotated_at or record.created_at)
                if record.expires_at is not None
                else DEFAULT_TOKEN_LIFETIME
            )
            lifetime = min(max(previous, timedelta(minutes=1)), MAX_TOKEN_LIFETIME)
        _check_lifetime(lifetime)
        token = _new_token(record.id)
        rotated = msgspec.structs.replace(
            record,
            sha256=token_digest(token),
            rotated_at=now,
            expires_at=now + lifetime,
            previous_sha256=record.sha256 if grace > timedelta(0) else "",
            previous_valid_until=now + grace if grace > timedelta(0) else None,
        )
        await self.table.put(rotated, replacing=record)
        if self.admin_token_path is not None and rotated.id == self._admin_token_id():
            write_private(self.admin_token_path, (token + "\n").encode())
        return rotated, token

    async def _find_by_id_or_name(self, id_or_name: str, project: str | None = None) -> TokenRecord:
        """The token with this id, else the one with this name (among `project`'s, if given)."""
        candidates = await self.list(project)
        for record in candidates:
            if record.id == id_or_name:
                return record
        named = [record for record in candidates if record.name == id_or_name]
        if len(named) > 1:
            where = ", ".join(sorted(r.project or "org level" for r in named))
            raise Conflict(
                f"{len(named)} tokens are named {id_or_name!r} ({where}); name it by its id"
            )
        if named:
            return named[0]
        raise NotFound(f"no token with id or name {id_or_name!r}")

    async def revoke(self, id_or_name: str, project: str | None = None) -> TokenRecord:
        record = await self._find_by_id_or_name(id_or_name, project)
        await self.table.remove(record)
        return record

    async def find(self, token_id: str) -> TokenRecord | None:
        return await self.table.record(token_id)

    async def authenticate(self, token: str, *, now: datetime) -> Principal | None:
        """The principal a presented token stands for, or None if it is not live at `now`."""
        record = await self._record_named_by(token)
        presented = token_digest(token)
        if record is None:
            hmac.compare_digest(presented, "0" * 64)  # the same work for unknown ids
            return None
        if not record.accepts(presented, now):
            return None
        return token_principal(record)

    async def expired_at(self, token: str, *, now: datetime) -> datetime | None:
        """When `token` expired, if it is a known token's current secret that has expired."""
        record = await self._record_named_by(token)
        if record is None or record.expires_at is None or now < record.expires_at:
            return None
        return (
            record.expires_at if hmac.compare_digest(token_digest(token), record.sha256) else None
        )

    async def _record_named_by(self, token: str) -> TokenRecord | None:
        token_id = token_id_of(token)
        return await self.find(token_id) if token_id else None

    def _admin_token_id(self) -> str:
        if self.admin_token_path is None:
            return ""
        return token_id_of(_read_token_file_text(self.admin_token_path))

    async def ensure_admin_token(self, path: Path, *, now: datetime) -> str:
        """The admin token kept in `path` (0600), created when missing, expired or not valid.

        Several hub processes may share one table, each with the admin token of its own data
        dir: the one replaced is the token whose id `path` names, and a new one is called
        `admin` unless another process's admin token has that name already."""
        self.admin_token_path = path
        existing = _read_token_file_text(path)
        if existing:
            principal = await self.authenticate(existing, now=now)
            if principal is not None and principal.is_org_admin:
                return existing
        records = await self.table.records()
        stale = token_id_of(existing)
        for record in records:
            # The admin token this path held (a single hub's file: any token named `admin`).
            if record.id == stale or (
                _is_hub_admin(record) and isinstance(self.table, TokenFileTable)
            ):
                await self.table.remove(record)
        taken = {r.name for r in await self.table.records() if r.project is None}
        _, token = await self.create(
            role=Role.admin,
            name=ADMIN_TOKEN_NAME if ADMIN_TOKEN_NAME not in taken else "",
            created_by="fleetbus up",
            lifetime=ADMIN_TOKEN_LIFETIME,
            now=now,
        )
        write_private(path, (token + "\n").encode())
        return token


def _read_token_file_text(path: Path) -> str:
    """The token kept in `path`, empty when there is none."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def token_id_of(token: str) -> str:
    """The id a presented token names (empty when it is not shaped like a fleetbus token)."""
    if not token.startswith(TOKEN_PREFIX):
        return ""
    token_id, sep, _ = token[len(TOKEN_PREFIX) :].partition("_")
    return token_id if sep else ""


def _is_hub_admin(record: TokenRecord) -> bool:
    """The token `fleetbus up` keeps in `<data-dir>/admin.token`."""
    return record.name == ADMIN_TOKEN_NAME and record.project is None


def _new_token(token_id: str) -> str:
    return f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def _problem(field: str, rule: str, value: float) -> FieldProblem:
    return FieldProblem(
        field=field, rule=rule, position=f"$.{field}", source="body", value=f"{value:g}"
    )


def _check_lifetime(lifetime: timedelta) -> None:
    if not timedelta(minutes=1) <= lifetime <= MAX_TOKEN_LIFETIME:
        raise InvalidRequest(
            f"a token's lifetime must be from 60 to {int(MAX_TOKEN_LIFETIME.total_seconds())} "
            f"seconds, got {lifetime.total_seconds():g}",
            errors=[
                _problem("expires_in_seconds", "from 60 to 31536000", lifetime.total_seconds())
            ],
        )


SSO_PREFIX = "oidc:"
"""How the token id of a single sign-on principal starts (`api.oidc`)."""


class StreamTickets:
    """Short-lived, signed credentials for opening the live event stream from a browser."""

    def __init__(self, key: bytes | None = None, ttl: timedelta = timedelta(seconds=60)) -> None:
        self._key = key or secrets.token_bytes(32)
        self.ttl = ttl

    def issue(self, principal: Principal, *, now: datetime) -> tuple[str, datetime]:
        """A ticket for `principal`: a token's id (dead with the token), or for a single
        sign-on user the principal itself (its JWT is not kept; the ticket lives a minute)."""
        expires = now + self.ttl
        payload = f"{principal.token_id}.{int(expires.timestamp())}".encode()
        if principal.token_id.startswith(SSO_PREFIX):
            payload += b"." + _b64(msgspec.json.encode(principal)).encode()
        signature = hmac.new(self._key, payload, hashlib.sha256).digest()
        ticket = _b64(payload) + "." + _b64(signature)
        return ticket, expires

    async def verify(self, ticket: str, tokens: TokenStore, *, now: datetime) -> Principal | None:
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
        token_id, _, rest = payload.decode(errors="replace").partition(".")
        expires_text, _, carried = rest.partition(".")
        if not expires_text.isdigit() or int(expires_text) < now.timestamp():
            return None
        if token_id.startswith(SSO_PREFIX):
            try:
                principal = msgspec.json.decode(_unb64(carried), type=Principal)
            except (ValueError, msgspec.DecodeError):
                return None
            return principal if principal.token_id == token_id else None
        record = await tokens.find(token_id)
        if record is None or (record.expires_at is not None and now >= record.expires_at):
            return None
        return token_principal(record)


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


class SingleSignOn(Protocol):
    """Verifies bearer JWTs of an identity provider (`api.oidc.OidcVerifier`)."""

    async def authenticate(self, token: str) -> Principal:
        """The caller a JWT stands for; raises `Unauthorized` or `Forbidden` saying why not."""
        ...


class TokenAuthentication(AbstractAuthenticationMiddleware):
    """Resolves the caller of every request that is not marked public; 401 when it cannot."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenStore,
        tickets: StreamTickets,
        exclude: list[str] | None = None,
        sso: Callable[[], SingleSignOn | None] = lambda: None,
    ) -> None:
        super().__init__(app, exclude=exclude, exclude_from_auth_key=PUBLIC)
        self.tokens = tokens
        self.tickets = tickets
        self.sso = sso
        """The hub's single sign-on, looked up per request (it may be configured later)."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if header and scheme.lower() == "bearer" and credential.strip():
            sso = self.sso()
            if sso is not None and _looks_like_jwt(credential.strip()):
                jwt_principal = await sso.authenticate(credential.strip())
                return AuthenticationResult(user=jwt_principal, auth=credential)
            now = datetime.now(UTC)
            principal = await self.tokens.authenticate(credential.strip(), now=now)
            if principal is None:
                expired = await self.tokens.expired_at(credential.strip(), now=now)
                if expired is not None:
                    raise Unauthorized(
                        f"the bearer token expired at {expired:%Y-%m-%dT%H:%M:%SZ}; "
                        "an admin can rotate it (`fleetbus token rotate NAME`)"
                    )
                raise Unauthorized(
                    "the bearer token is not valid (revoked, expired, mistyped or unknown)"
                )
            return AuthenticationResult(user=principal, auth=credential)
        ticket = connection.query_params.get("ticket")
        if ticket and connection.route_handler.opt.get(ACCEPTS_TICKET):
            principal = await self.tickets.verify(ticket, self.tokens, now=datetime.now(UTC))
            if principal is None:
                raise Unauthorized("the stream ticket is not valid or has expired; get a new one")
            return AuthenticationResult(user=principal, auth=ticket)
        raise Unauthorized(
            "this needs a token: send `Authorization: Bearer <token>` (`fleetbus token create` "
            "makes one; the hub's admin token is in <data-dir>/admin.token)"
        )


PROJECT_HEADER = "X-Fleetbus-Project"
"""Names the project a request acts in (browsers' event streams: the `project` query)."""
PROJECT_STATE = "fleetbus_project"
"""Where the guard leaves the project a request acts in, for `api.tenancy`."""
ORG_ONLY = "org_only"
"""Route `opt` key: the route is hub-wide, for org-level callers only."""


def requested_project(connection: ASGIConnection[Any, Any, Any, Any], principal: Principal) -> str:
    """The project a request acts in: as named, else the caller's own, else `default`."""
    named = connection.headers.get(PROJECT_HEADER) or connection.query_params.get("project")
    if named:
        try:
            return check_project_name(named)
        except InvalidName as e:
            raise InvalidRequest(str(e), {"project": named}) from e
    if principal.project is not None:
        return principal.project
    if not principal.org_level and len(principal.grants) == 1:
        return next(iter(principal.grants))
    if not principal.org_level and principal.grants:
        raise InvalidRequest(
            f"{principal.name!r} holds roles in several projects "
            f"({', '.join(sorted(principal.grants))}); name one with the {PROJECT_HEADER} "
            "header (`--project` on the CLI)"
        )
    return DEFAULT_PROJECT


def _looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and not credential.startswith(TOKEN_PREFIX)


def requires(role: Role, *, org: bool = False) -> Any:
    """A route guard letting through callers whose role in the request's project is at least
    `role`; with `org`, only org-level callers (the route is hub-wide)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.user
        if not isinstance(principal, Principal):
            raise Unauthorized("this needs a token")
        if org:
            if not principal.org_level:
                raise Forbidden(
                    f"this is a hub-wide route for org-level tokens; {principal.name!r} "
                    "belongs to a project",
                    {"required": f"org {role.value}", "role": principal.role.value},
                )
            if not principal.may(role, DEFAULT_PROJECT):
                raise Forbidden(
                    f"this needs the {role.value} role; token {principal.name!r} is a "
                    f"{principal.role.value}",
                    {"required": role.value, "role": principal.role.value},
                )
            return
        project = requested_project(connection, principal)
        held = principal.role_in(project)
        if held is None:
            raise Forbidden(
                f"{principal.name!r} has no role in project {project}",
                {"required": role.value, "project": project},
            )
        if not principal.may(role, project):
            where = "" if project == DEFAULT_PROJECT else f" in project {project}"
            raise Forbidden(
                f"this needs the {role.value} role{where}; token {principal.name!r} is a "
                f"{held.value}",
                {"required": role.value, "role": held.value},
            )
        connection.scope.setdefault("state", {})[PROJECT_STATE] = project

    guard.__name__ = f"requires_{'org_' if org else ''}{role.value}"
    return guard


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.user
    if not isinstance(principal, Principal):
        raise Unauthorized("this needs a token")
    return principal
