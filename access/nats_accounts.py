"""The hub's NATS trust chain: one operator, the system account, an account per project, users.

nats-server runs in operator mode with the nats-based `full` account resolver: it trusts the
operator's key only, and learns every account from a JWT the operator signed. Accounts (their
JetStream limits, the user keys they revoke) change by pushing a new account JWT to any server
(`access.account_push`); the resolver hands it to every server of the cluster through the
system account, so no server's config is ever rewritten or reloaded for a change of access.

`NatsAuthority` holds the seeds (operator, accounts) in one owner-only file of the hub's data
dir and signs:
- the operator JWT and the system account's JWT, which every server's config names
  (`server_config`);
- account JWTs, one per project (`FLEET` is the default project's account: the one fleetbus
  has always had), with that project's JetStream limits and revocations;
- user JWTs with their permissions, written as `.creds` files: the hub's own services
  (`hub`, in FLEET; `sys`, in the system account) and each registered cluster.

A cluster's user key is not stored anywhere: it is derived from a secret of the authority and
the cluster's certificate fingerprint (`cluster_user_key`), so the hub can name (and revoke)
the key of any certificate in the log, and a new certificate always gets a new key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from access.errors import AccessError
from access.nats_jwt import (
    NO_JETSTREAM,
    JetStreamLimits,
    Nkey,
    account_jwt,
    credentials_file,
    new_nkey,
    operator_jwt,
    user_jwt,
)
from access.private_files import write_private
from taskset.names import check_name

AUTH_FILE = "nats-auth.json"
OPERATOR_NAME = "fleetbus"
SYSTEM_ACCOUNT = "SYS"
FLEET_ACCOUNT = "FLEET"
DEFAULT_PROJECT = "default"
"""The project every install has; its account is FLEET, the account of a single-team hub."""

HUB_USER = "hub"
SYS_USER = "sys"


class ProjectLimits(msgspec.Struct, frozen=True, kw_only=True):
    """A project's JetStream limits: storage in bytes (file and memory), streams, consumers.
    -1 is unlimited."""

    storage_bytes: int = -1
    memory_bytes: int = -1
    streams: int = -1
    consumers: int = -1

    def jetstream(self) -> JetStreamLimits:
        for name in ("storage_bytes", "memory_bytes", "streams", "consumers"):
            value = getattr(self, name)
            if value < -1:
                raise AccessError(f"project limit {name} must be -1 (unlimited) or ≥ 0: {value}")
        return JetStreamLimits(
            memory_bytes=self.memory_bytes,
            storage_bytes=self.storage_bytes,
            streams=self.streams,
            consumers=self.consumers,
        )


FLEET_LIMITS = ProjectLimits(consumers=100_000)
"""The default project's limits: one durable and one mirror consumer per cluster on DESIRED
would hit nats-server's default of 1,000 consumers at a few hundred clusters."""


def account_of_project(project: str) -> str:
    """The account name of a project: FLEET for the default project."""
    if project == DEFAULT_PROJECT:
        return FLEET_ACCOUNT
    check_name("project", project)
    return f"project-{project}"


class _Stored(msgspec.Struct, kw_only=True):
    operator: str
    accounts: dict[str, str]
    limits: dict[str, ProjectLimits] = msgspec.field(default_factory=dict)
    derive_secret: str
    issued_at: int = 0


@dataclass
class NatsAuthority:
    """The operator and account seeds of one hub, and everything they sign."""

    path: Path
    operator: Nkey
    accounts: dict[str, Nkey]
    limits: dict[str, ProjectLimits]
    derive_secret: str
    issued_at: int = 0

    @classmethod
    def open(cls, root: Path) -> NatsAuthority:
        """The authority kept in `root/nats-auth.json`, created (operator, SYS, FLEET) the
        first time."""
        path = root / AUTH_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            authority = cls(
                path=path,
                operator=new_nkey("operator"),
                accounts={SYSTEM_ACCOUNT: new_nkey("account"), FLEET_ACCOUNT: new_nkey("account")},
                limits={FLEET_ACCOUNT: FLEET_LIMITS},
                derive_secret=secrets.token_hex(32),
            )
            authority.save()
            return authority
        try:
            stored = msgspec.json.decode(raw, type=_Stored)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise AccessError(f"{path}: not a fleetbus NATS authority file: {e}") from e
        return cls(
            path=path,
            operator=Nkey(stored.operator),
            accounts={name: Nkey(seed) for name, seed in stored.accounts.items()},
            limits=dict(stored.limits),
            derive_secret=stored.derive_secret,
            issued_at=stored.issued_at,
        )

    def save(self) -> None:
        stored = _Stored(
            operator=self.operator.seed,
            accounts={name: key.seed for name, key in sorted(self.accounts.items())},
            limits=dict(sorted(self.limits.items())),
            derive_secret=self.derive_secret,
            issued_at=self.issued_at,
        )
        write_private(self.path, msgspec.json.encode(stored))

    # --- keys and times ---------------------------------------------------------------------

    def account(self, name: str) -> Nkey:
        try:
            return self.accounts[name]
        except KeyError:
            raise AccessError(f"no NATS account {name!r} on this hub") from None

    def public_key(self, account: str) -> str:
        return self.account(account).public

    @property
    def system_account(self) -> str:
        return self.public_key(SYSTEM_ACCOUNT)

    def next_issued_at(self, now: float | None = None) -> int:
        """A JWT issue time later than every one this authority signed before: a resolver
        keeps the newer of two account JWTs, so two updates in one second must differ."""
        wall = int(now if now is not None else time.time())
        self.issued_at = max(wall, self.issued_at + 1)
        self.save()
        return self.issued_at

    def cluster_user_key(self, cluster: str, fingerprint: str) -> Nkey:
        """The user key of the cluster certificate with `fingerprint` (derived, not stored)."""
        raw = hmac.new(
            bytes.fromhex(self.derive_secret),
            f"cluster-user:{cluster}:{fingerprint}".encode(),
            hashlib.sha256,
        ).digest()
        return new_nkey("user", raw)

    def service_user_key(self, account: str, user: str) -> Nkey:
        raw = hmac.new(
            bytes.fromhex(self.derive_secret),
            f"service-user:{account}:{user}".encode(),
            hashlib.sha256,
        ).digest()
        return new_nkey("user", raw)

    # --- JWTs ---------------------------------------------------------------------------------

    def operator_jwt(self) -> str:
        # The operator JWT is stable (a server compares it with its config at every start).
        return operator_jwt(self.operator, OPERATOR_NAME, system_account=self.system_account, iat=1)

    def account_jwt(
        self,
        name: str,
        *,
        revocations: Mapping[str, int] | None = None,
        exports: list[dict[str, Any]] | None = None,
        imports: list[dict[str, Any]] | None = None,
        now: float | None = None,
        iat: int | None = None,
    ) -> str:
        """The account's JWT with its limits, `revocations` (user key → revoked-before time)
        and links to other accounts (`access.project_links`), issued now (or at `iat`)."""
        limits = NO_JETSTREAM if name == SYSTEM_ACCOUNT else self._limits(name).jetstream()
        return account_jwt(
            self.account(name),
            self.operator,
            name,
            iat=iat if iat is not None else self.next_issued_at(now),
            jetstream=limits,
            revocations=revocations,
            exports=exports,
            imports=imports,
        )

    def _limits(self, name: str) -> ProjectLimits:
        return self.limits.get(name, ProjectLimits())

    def ensure_project_account(self, project: str, limits: ProjectLimits) -> str:
        """Create (or update the limits of) the project's account; its name. Push its JWT
        (`account_jwt`) to make it effective."""
        limits.jetstream()  # checks the values
        name = account_of_project(project)
        if name not in self.accounts:
            self.accounts[name] = new_nkey("account")
        self.limits[name] = limits
        self.save()
        return name

    def user_credentials(
        self,
        account: str,
        user: Nkey,
        name: str,
        *,
        permissions: Mapping[str, Mapping[str, list[str]]] | None = None,
        connection_types: list[str] | None = None,
        now: float | None = None,
        expires: int | None = None,
    ) -> str:
        """A `.creds` file for `user` in `account`; `permissions` as in a server config
        (`{"publish": {"allow": [...]}, "subscribe": {...}}`, absent: everything)."""
        permissions = permissions or {}
        token = user_jwt(
            user.public,
            self.account(account),
            name,
            iat=int(now if now is not None else time.time()),
            publish=permissions.get("publish"),
            subscribe=permissions.get("subscribe"),
            connection_types=connection_types,
            expires=expires,
        )
        return credentials_file(token, user.seed)

    def service_credentials(self, root: Path) -> ServiceCredentials:
        """Write the `.creds` files of the hub's own users into `root` (0600); their paths."""
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        hub = root / f"{HUB_USER}.creds"
        system = root / f"{SYS_USER}.creds"
        write_private(
            hub,
            self.user_credentials(
                FLEET_ACCOUNT,
                self.service_user_key(FLEET_ACCOUNT, HUB_USER),
                HUB_USER,
                permissions=HUB_PERMISSIONS,
            ).encode(),
        )
        write_private(
            system,
            self.user_credentials(
                SYSTEM_ACCOUNT, self.service_user_key(SYSTEM_ACCOUNT, SYS_USER), SYS_USER
            ).encode(),
        )
        return ServiceCredentials(hub=hub, system=system)

    def server_config(self, resolver_dir: Path) -> str:
        """The operator-mode lines of a server config: the same on every node of a cluster
        (the resolver dir is each node's own)."""
        return "\n".join(
            [
                f'operator: "{self.operator_jwt()}"',
                f"system_account: {self.system_account}",
                "resolver: {",
                "  type: full",
                f'  dir: "{resolver_dir}"',
                "  allow_delete: false",
                '  interval: "2m"',
                "  limit: 1000",
                "}",
                # The system account must be known before any resolver can be asked; FLEET is
                # known from the first start so the hub's services can log in. Both are issued
                # at time 1: a resolver keeps the newer JWT it holds (one pushed since, with
                # revocations) over a preloaded one, across restarts.
                "resolver_preload: {",
                f'  {self.system_account}: "{self.account_jwt(SYSTEM_ACCOUNT, iat=1)}"',
                f'  {self.public_key(FLEET_ACCOUNT)}: "{self.account_jwt(FLEET_ACCOUNT, iat=1)}"',
                "}",
            ]
        )


@dataclass(frozen=True)
class ServiceCredentials:
    """The `.creds` files of the hub's own NATS users."""

    hub: Path
    system: Path


HUB_PERMISSIONS: dict[str, dict[str, list[str]]] = {
    # The hub's own services may do anything in FLEET but delete the log.
    "publish": {
        "allow": [">"],
        "deny": ["$JS.API.STREAM.DELETE.EVENTS", "$JS.hub.API.STREAM.DELETE.EVENTS"],
    }
}


def credentials_jwt(creds: str) -> str:
    """The user JWT inside a `.creds` file's text."""
    lines = creds.splitlines()
    try:
        return lines[lines.index("-----BEGIN NATS USER JWT-----") + 1].strip()
    except (ValueError, IndexError) as e:
        raise AccessError("not a NATS credentials file (no user JWT)") from e
