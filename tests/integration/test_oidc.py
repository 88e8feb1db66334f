"""Single sign-on against a real token issuer on loopback: keys generated here, discovery and
JWKS served over HTTP, JWTs signed by it and verified by the hub."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api.auth import PROJECT_HEADER, Role
from api.errors import InvalidRequest
from api.oidc import OidcConfig, OidcVerifier, RoleMapping, load_oidc_config
from events.store import EventStore
from tests.integration.api_harness import LiveApi, live_api, projected
from tests.integration.test_api_events import append_each, registered

AUDIENCE = "fleetbus"


@dataclass
class Issuer:
    """An OpenID Connect issuer: a discovery document and a JWKS on a loopback port."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)
    """kid -> private key; the JWKS publishes their public halves."""
    jwks_fetches: int = 0

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "RS256"
            else:
                jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk["alg"] = "ES256"
            published.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": published}

    def sign(
        self,
        *,
        groups: list[str],
        kid: str = "k1",
        key: Any = None,
        issuer: str | None = None,
        audience: str = AUDIENCE,
        lifetime: float = 300,
        sub: str = "u-123",
        name: str = "alice",
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer or self.url,
            "aud": audience,
            "sub": sub,
            "preferred_username": name,
            "groups": groups,
            "iat": now,
            "exp": int(now + lifetime),
        }
        signing_key = key or self.keys[kid]
        algorithm = "RS256" if isinstance(signing_key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(claims, signing_key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as state:
        yield state


@contextlib.contextmanager
def serve_issuer() -> Iterator[Issuer]:
    """An issuer with one RSA key, serving until the block ends."""
    state = Issuer(keys={"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": state.url, "jwks_uri": state.url + "/jwks"}
            elif self.path == "/jwks":
                state.jwks_fetches += 1
                body = state.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def config_for(issuer: Issuer) -> OidcConfig:
    return OidcConfig(
        issuer=issuer.url,
        audience=AUDIENCE,
        leeway_seconds=0,
        jwks_min_refresh_seconds=0,
        roles=[
            RoleMapping(group="platform-admins", role=Role.admin),
            RoleMapping(group="payments-devs", project="payments", role=Role.publisher),
            RoleMapping(group="payments-ops", project="payments", role=Role.viewer),
            RoleMapping(group="search-ops", project="search", role=Role.viewer),
        ],
    )


@pytest.fixture
async def hub(event_store: EventStore, tmp_path: Path, issuer: Issuer) -> AsyncIterator[LiveApi]:
    await append_each(event_store, [registered("payments--east"), registered("search--west")])
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        api.hub.sso = OidcVerifier(config_for(issuer))
        async with api.client(Role.admin) as org:
            for project in ("payments", "search"):
                made = await org.post("/api/v1/projects", json={"name": project})
                assert made.status_code == 201, made.text
        await projected(api)
        yield api


def as_user(api: LiveApi, token: str, project: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"}
    if project:
        headers[PROJECT_HEADER] = project
    return httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30.0)


async def test_a_signed_in_users_groups_decide_their_projects_and_roles(
    hub: LiveApi, issuer: Issuer
) -> None:
    token = issuer.sign(groups=["payments-devs", "unrelated"])
    async with as_user(hub, token) as alice:
        whoami = (await alice.get("/api/v1/whoami")).json()
        clusters = await alice.get("/api/v1/clusters")
        elsewhere = await alice.get("/api/v1/clusters", headers={PROJECT_HEADER: "search"})
        hub_wide = await alice.get("/api/v1/keys")
    assert whoami["name"] == "alice"
    assert (whoami["project"], whoami["role"], whoami["org_level"]) == (
        "payments",
        "publisher",
        False,
    )
    assert [c["name"] for c in clusters.json()] == ["payments--east"]
    assert elsewhere.status_code == 403
    assert elsewhere.json()["error"] == "'alice' has no role in project search"
    assert hub_wide.status_code == 403

    both = issuer.sign(groups=["payments-ops", "search-ops"], name="bob")
    async with as_user(hub, both) as bob:
        unnamed = await bob.get("/api/v1/clusters")
        search = await bob.get("/api/v1/clusters", headers={PROJECT_HEADER: "search"})
        publish = await bob.post(
            "/api/v1/tasksets/x/retire", json={}, headers={PROJECT_HEADER: "search"}
        )
    assert unnamed.status_code == 400
    assert "holds roles in several projects (payments, search)" in unnamed.json()["error"]
    assert [c["name"] for c in search.json()] == ["search--west"]
    assert publish.status_code == 403, "a viewer there"

    admin = issuer.sign(groups=["platform-admins"], name="root")
    async with as_user(hub, admin) as root:
        everything = await root.get("/api/v1/clusters")
        keys = await root.get("/api/v1/keys")
    assert {c["name"] for c in everything.json()} == {"payments--east", "search--west"}
    assert keys.status_code == 200, "an org admin by group"


async def test_a_signed_in_user_opens_the_live_stream_with_a_ticket(
    hub: LiveApi, issuer: Issuer
) -> None:
    async with as_user(hub, issuer.sign(groups=["payments-ops"])) as alice:
        ticket = (await alice.post("/api/v1/stream-tickets")).json()["ticket"]
    async with (
        httpx.AsyncClient(base_url=hub.url, timeout=30.0) as browser,
        browser.stream("GET", "/api/v1/events/stream", params={"ticket": ticket}) as response,
    ):
        assert response.status_code == 200
    async with httpx.AsyncClient(base_url=hub.url, timeout=30.0) as browser:
        elsewhere = await browser.get(
            "/api/v1/events/stream", params={"ticket": ticket, "project": "search"}
        )
    assert elsewhere.status_code == 403, "the ticket carries alice's roles, no more"


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("expired", 401, "the bearer JWT expired at "),
        ("wrong audience", 401, "the bearer JWT is not for this hub: its audience is not"),
        ("wrong issuer", 401, "was issued by 'https://evil.example', not by this hub's issuer"),
        ("wrong signature", 401, "signature does not verify with the issuer's keys"),
        ("unknown key", 401, "names key 'k9', which the issuer"),
        ("hmac", 401, "signed with 'HS256'; the hub accepts only the issuer's public-key"),
        ("no mapped group", 403, "none of their groups (interns) maps to a role on this hub"),
        ("garbage", 401, "the bearer JWT is malformed"),
    ],
)
async def test_a_bad_jwt_is_refused_saying_why(
    hub: LiveApi, issuer: Issuer, case: str, status: int, message: str
) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens: dict[str, Callable[[], str]] = {
        "expired": lambda: issuer.sign(groups=["platform-admins"], lifetime=-3600),
        "wrong audience": lambda: issuer.sign(groups=["platform-admins"], audience="grafana"),
        "wrong issuer": lambda: issuer.sign(
            groups=["platform-admins"], issuer="https://evil.example"
        ),
        "wrong signature": lambda: issuer.sign(groups=["platform-admins"], key=impostor),
        "unknown key": lambda: issuer.sign(groups=["platform-admins"], kid="k9", key=impostor),
        "hmac": lambda: jwt.encode(
            {"sub": "x", "groups": ["platform-admins"]},
            "a-shared-secret-of-more-than-32-bytes",
            headers={"kid": "k1"},
        ),
        "no mapped group": lambda: issuer.sign(groups=["interns"]),
        "garbage": lambda: "not.a.jwt",
    }
    async with as_user(hub, tokens[case]()) as client:
        response = await client.get("/api/v1/whoami")
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


async def test_a_rotated_issuer_key_is_fetched_when_a_token_names_it(
    hub: LiveApi, issuer: Issuer
) -> None:
    async with as_user(hub, issuer.sign(groups=["platform-admins"])) as first:
        assert (await first.get("/api/v1/whoami")).status_code == 200
    fetched = issuer.jwks_fetches
    async with as_user(hub, issuer.sign(groups=["platform-admins"])) as again:
        assert (await again.get("/api/v1/whoami")).status_code == 200
    assert issuer.jwks_fetches == fetched, "keys are cached"
    issuer.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
    async with as_user(hub, issuer.sign(groups=["platform-admins"], kid="k2")) as rotated:
        assert (await rotated.get("/api/v1/whoami")).status_code == 200
    assert issuer.jwks_fetches == fetched + 1


def test_the_oidc_config_file_is_checked_naming_the_file_and_field(tmp_path: Path) -> None:
    good = tmp_path / "oidc.yaml"
    good.write_text(
        "issuer: https://login.example.com\naudience: fleetbus\nroles:\n"
        "  - {group: devs, project: payments, role: publisher}\n"
    )
    config = load_oidc_config(good)
    assert config.roles == [RoleMapping(group="devs", project="payments", role=Role.publisher)]
    bad_role = tmp_path / "bad-role.yaml"
    bad_role.write_text("issuer: https://x\naudience: a\nroles:\n  - {group: g, role: god}\n")
    with pytest.raises(InvalidRequest, match=r"bad-role.yaml: Invalid enum value 'god'"):
        load_oidc_config(bad_role)
    bad_project = tmp_path / "bad-project.yaml"
    bad_project.write_text(
        "issuer: https://x\naudience: a\nroles:\n  - {group: g, project: A--B, role: viewer}\n"
    )
    with pytest.raises(InvalidRequest, match=r"bad-project.yaml: roles\[0\].project"):
        load_oidc_config(bad_project)
    missing = tmp_path / "missing.yaml"
    missing.write_text("audience: a\n")
    with pytest.raises(
        InvalidRequest, match=r"missing.yaml: Object missing required field `issuer`"
    ):
        load_oidc_config(missing)
