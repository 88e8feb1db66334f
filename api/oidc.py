"""Single sign-on: bearer JWTs from an OpenID Connect issuer, verified against its JWKS.

A hub configured with an issuer (`fleetbus up --oidc-config FILE`) accepts, beside its own
`fbt_` tokens, the ID or access tokens that issuer signs for the configured audience. The
issuer's keys come from its discovery document (`<issuer>/.well-known/openid-configuration`,
`jwks_uri`), are kept for `jwks_cache_seconds`, and are fetched again at once (at most every
`jwks_min_refresh_seconds`) when a token names a key id the hub does not know, so a key rotation
at the issuer needs nothing at the hub. A token is accepted only when its signature verifies
with one of those keys under an asymmetric algorithm (RS*, PS*, ES*, EdDSA; never `none` nor
HMAC), its `iss` is the issuer, its `aud` holds the audience, and `exp` (required) has not
passed, with `leeway_seconds` of clock skew.

What the user may do comes from the groups claim (`groups_claim`, default `groups`) through the
`roles` table: a group maps to a role in one project, or (without a project) to an org-level
role. A user whose groups map to nothing is refused with 403 naming them.

The file is YAML or JSON:

    issuer: https://login.example.com/realms/acme
    audience: fleetbus
    groups_claim: groups
    username_claim: preferred_username
    roles:
      - {group: platform-admins, role: admin}                    # org admin
      - {group: payments-devs, project: payments, role: publisher}
      - {group: payments-ops, project: payments, role: viewer}

The library is PyJWT (with `cryptography`); its errors are translated here into sentences.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec
import yaml

from api.auth import ROLE_RANK, SSO_PREFIX, Principal, Role
from api.errors import ApiError, Forbidden, InvalidRequest, Unauthorized
from taskset.errors import InvalidName
from taskset.projects import check_project_name

ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class RoleMapping(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    group: str
    role: Role
    project: str | None = None
    """None: the role holds in every project (org-level)."""


class OidcConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    issuer: str
    audience: str
    roles: list[RoleMapping] = msgspec.field(default_factory=list)
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    """Names the user in events' `actor` (`sub` when the token lacks it)."""
    leeway_seconds: float = 30.0
    jwks_cache_seconds: float = 300.0
    jwks_min_refresh_seconds: float = 10.0
    http_timeout_seconds: float = 10.0


class OidcUnavailable(ApiError):
    """The issuer's discovery document or keys could not be fetched."""

    status_code = 503


def load_oidc_config(path: Path) -> OidcConfig:
    """The single sign-on settings in `path`; a clear error naming the file and field if bad."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as e:
        raise InvalidRequest(f"{path}: cannot read the OIDC config: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise InvalidRequest(f"{path}: not YAML: {e}") from e
    try:
        config = msgspec.convert(document, OidcConfig)
    except msgspec.ValidationError as e:
        raise InvalidRequest(f"{path}: {e}") from e
    if not config.issuer.startswith(("https://", "http://")):
        raise InvalidRequest(f"{path}: `issuer` must be an http(s) URL, got {config.issuer!r}")
    for index, mapping in enumerate(config.roles):
        if mapping.project is not None:
            try:
                check_project_name(mapping.project)
            except InvalidName as e:
                raise InvalidRequest(f"{path}: roles[{index}].project: {e}") from e
    return config


class OidcVerifier:
    """Verifies bearer JWTs of one issuer and maps their groups to roles."""

    def __init__(self, config: OidcConfig, *, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str) -> dict[str, Any]:
        client = self._client or httpx.AsyncClient(timeout=self.config.http_timeout_seconds)
        try:
            response = await client.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise OidcUnavailable(f"cannot fetch {url} from the OIDC issuer: {e}") from e
        finally:
            if self._client is None:
                await client.aclose()
        if not isinstance(document, dict):
            raise OidcUnavailable(f"{url} is not a JSON object")
        return document

    async def _refresh(self, *, unknown_kid: bool) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if unknown_kid and age < self.config.jwks_min_refresh_seconds:
                return
            if not unknown_kid and age < self.config.jwks_cache_seconds:
                return
            discovery_url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            discovery = await self._get_json(discovery_url)
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise OidcUnavailable(f"{discovery_url} names no jwks_uri")
            try:
                keys = jwt.PyJWKSet.from_dict(await self._get_json(jwks_uri)).keys
            except jwt.PyJWTError as e:
                raise OidcUnavailable(f"{jwks_uri} holds no usable keys: {e}") from e
            self._keys = {key.key_id: key for key in keys if key.key_id}
            self._fetched_at = time.monotonic()

    async def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise Unauthorized(f"the bearer JWT is malformed: {e}") from e
        algorithm = header.get("alg")
        if algorithm not in ASYMMETRIC:
            raise Unauthorized(
                f"the bearer JWT is signed with {algorithm!r}; the hub accepts only the "
                f"issuer's public-key algorithms ({', '.join(ASYMMETRIC)})"
            )
        kid = str(header.get("kid") or "")
        await self._refresh(unknown_kid=False)
        if kid not in self._keys:
            await self._refresh(unknown_kid=True)
        if kid not in self._keys:
            raise Unauthorized(
                f"the bearer JWT names key {kid!r}, which the issuer "
                f"{self.config.issuer} does not publish"
            )
        return self._keys[kid]

    async def authenticate(self, token: str) -> Principal:
        """The principal a JWT stands for; `Unauthorized`/`Forbidden` saying why not."""
        config = self.config
        key = await self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=list(ASYMMETRIC),
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as e:
            expired = _claim_time(token, "exp")
            raise Unauthorized(
                f"the bearer JWT expired at {expired}; sign in again to get a new one"
            ) from e
        except jwt.InvalidAudienceError as e:
            raise Unauthorized(
                f"the bearer JWT is not for this hub: its audience is not {config.audience!r}"
            ) from e
        except jwt.InvalidIssuerError as e:
            raise Unauthorized(
                f"the bearer JWT was issued by {_claim(token, 'iss')!r}, not by this hub's "
                f"issuer {config.issuer!r}"
            ) from e
        except jwt.InvalidSignatureError as e:
            raise Unauthorized(
                "the bearer JWT's signature does not verify with the issuer's keys"
            ) from e
        except jwt.MissingRequiredClaimError as e:
            raise Unauthorized(f"the bearer JWT lacks the claim {e.claim!r}") from e
        except jwt.PyJWTError as e:
            raise Unauthorized(f"the bearer JWT is not valid: {e}") from e
        return self.principal_of(claims)

    def principal_of(self, claims: dict[str, Any]) -> Principal:
        config = self.config
        raw_groups = claims.get(config.groups_claim) or []
        groups = {str(g) for g in raw_groups} if isinstance(raw_groups, list) else set()
        name = str(claims.get(config.username_claim) or claims["sub"])
        org: Role | None = None
        grants: dict[str, Role] = {}
        for mapping in config.roles:
            if mapping.group not in groups:
                continue
            if mapping.project is None:
                org = _higher(org, mapping.role)
            else:
                grants[mapping.project] = _higher(grants.get(mapping.project), mapping.role)
        if org is None and not grants:
            shown = ", ".join(sorted(groups)) or "none"
            raise Forbidden(
                f"{name!r} signed in, but none of their groups ({shown}) maps to a role on this "
                "hub; ask an org admin to map one in the hub's OIDC config",
                {"user": name},
            )
        highest = org or max(grants.values(), key=ROLE_RANK.__getitem__)
        return Principal(
            token_id=SSO_PREFIX + hashlib.sha256(str(claims["sub"]).encode()).hexdigest()[:12],
            name=name,
            role=highest,
            grants=grants,
            org_level=org is not None,
        )


def _higher(current: Role | None, role: Role) -> Role:
    if current is None or ROLE_RANK[role] > ROLE_RANK[current]:
        return role
    return current


def _claim(token: str, name: str) -> Any:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.PyJWTError:
        return None


def _claim_time(token: str, name: str) -> str:
    value = _claim(token, name)
    if isinstance(value, int | float):
        return f"{datetime.fromtimestamp(value, UTC):%Y-%m-%dT%H:%M:%SZ}"
    return "an unreadable time"
