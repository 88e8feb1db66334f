"""Who may call what: the auth matrix of every route, tokens, and stream tickets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from access.nats_accounts import NatsAuthority
from access.pki import HubPki
from api.app import OPENAPI_PATH, create_app, describe_routes
from api.auth import Role, StreamTickets, TokenStore
from api.context import HubContext
from events.catalog import RolloutHalted
from events.ids import new_event_id
from events.store import EventStore
from fleetbus.enrollment import BundleEnrollment, LogStateHistory
from notify.model import Filters
from notify.service import Notifier
from notify.store import SubscriptionStore
from sources.credentials import Credential
from tests.eventually import eventually
from tests.integration.api_harness import LiveApi, live_api, projected
from tests.integration.test_api_events import NOW, append_each, published, registered
from tests.integration.test_api_fleet import PATCH
from tests.integration.test_api_tasksets import CONFIGMAP

ROLES: tuple[Role | None, ...] = (None, Role.viewer, Role.publisher, Role.admin)
RANK = {Role.viewer: 1, Role.publisher: 2, Role.admin: 3}


@dataclass(frozen=True)
class Request:
    """What one call sends: the path's values, and a JSON body or a multipart form."""

    values: dict[str, str] = field(default_factory=dict)
    json: Any = None
    form: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes]] | None = None


@dataclass(frozen=True)
class Case:
    """One route: what it needs, and a request that succeeds for a caller allowed to make it."""

    method: str
    path: str
    needs: Role | None
    ok: int = 200
    prepare: Callable[[LiveApi], Awaitable[Request]] | None = None
    """Makes what this call works on (a fresh token, taskset, cluster...) and its request."""
    stream: bool = False
    params: dict[str, str] = field(default_factory=dict)


def fresh(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


async def as_admin(api: LiveApi, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with api.client(Role.admin) as admin:
        response = await admin.request(method, path, **kwargs)
    assert response.status_code < 300, response.text
    return response


async def a_spare_token(api: LiveApi) -> Request:
    record, _ = await api.hub.tokens.create(
        role=Role.viewer, name=fresh("spare"), now=datetime.now(UTC)
    )
    return Request(values={"token": record.id})


async def a_data_key_rotation(api: LiveApi) -> Request:
    return Request(json={"kek": False, "data_keys": True})


async def a_cluster_to_shred(api: LiveApi) -> Request:
    return Request(json={"cluster": fresh("shred")})


async def a_spare_token_to_rotate(api: LiveApi) -> Request:
    spare = await a_spare_token(api)
    return Request(values=spare.values, json={"grace_seconds": 0})


async def a_new_token(api: LiveApi) -> Request:
    return Request(json={"role": "viewer", "name": fresh("made")})


async def an_upload(api: LiveApi) -> Request:
    spec = json.dumps({"name": fresh("upload"), "namespace": "web"})
    return Request(form={"spec": spec}, files={"source": ("settings.yaml", CONFIGMAP)})


async def a_published_taskset(api: LiveApi) -> Request:
    name = fresh("retiree")
    await append_each(api.hub.store, [published(name)])
    return Request(values={"name": name}, json={"reason": "matrix"})


async def a_taskset_to_roll_back(api: LiveApi) -> Request:
    name = fresh("rolled")
    await append_each(api.hub.store, [published(name)])
    return Request(values={"name": name}, json={"to_version": 1})


async def a_new_cluster(api: LiveApi) -> Request:
    return Request(json={"name": fresh("edge"), "labels": {"env": "dev"}})


async def a_label_change(api: LiveApi) -> Request:
    return Request(values={"name": "east"}, json={"set": {"tier": fresh("t")}})


async def a_registered_cluster(api: LiveApi) -> Request:
    name = fresh("leaving")
    await append_each(api.hub.store, [registered(name)])
    return Request(values={"name": name})


async def an_override(api: LiveApi) -> Request:
    return Request(values={"name": fresh("green")}, json={"cluster": "east", "patches": [PATCH]})


async def an_override_to_remove(api: LiveApi) -> Request:
    name = fresh("gone")
    body = {"cluster": "east", "patches": [PATCH]}
    await as_admin(api, "PUT", f"/api/v1/tasksets/settings/overrides/{name}", json=body)
    return Request(values={"name": name})


async def a_halted_rollout(api: LiveApi) -> Request:
    name = fresh("halted")
    halted = RolloutHalted(
        id=new_event_id(),
        occurred_at=NOW,
        actor="scheduler",
        taskset=name,
        taskset_version=1,
        wave=0,
        failed=["east"],
    )
    await append_each(api.hub.store, [published(name), halted])
    return Request(values={"name": name})


def a_blueprint_document() -> dict[str, Any]:
    return {"blueprint": {"name": fresh("stack"), "entries": [{"taskset": "settings"}]}}


async def a_new_blueprint(api: LiveApi) -> Request:
    return Request(json=a_blueprint_document())


async def a_blueprint(api: LiveApi) -> Request:
    document = a_blueprint_document()
    await as_admin(api, "POST", "/api/v1/blueprints", json=document)
    await projected(api)
    return Request(values={"name": document["blueprint"]["name"]}, json={"pinned_version": 1})


async def an_assigned_blueprint(api: LiveApi) -> Request:
    request = await a_blueprint(api)
    name = request.values["name"]
    await as_admin(api, "PUT", f"/api/v1/blueprints/{name}/clusters/east", json={})
    return request


async def a_new_subscription(api: LiveApi) -> Request:
    return Request(json={"name": fresh("hook"), "url": "http://127.0.0.1:9/hook"})


async def a_subscription(api: LiveApi) -> Request:
    assert api.hub.notifications is not None
    subscription, _ = await api.hub.notifications.add(
        name=fresh("old-hook"),
        sink="json",
        url="http://127.0.0.1:9/hook",
        filters=Filters(),
        hmac_key=None,
        created_by="test",
    )
    return Request(values={"name": subscription.name})


async def a_new_source(api: LiveApi) -> Request:
    source = {"kind": "git", "url": "git://127.0.0.1/platform.git", "ref": "main"}
    return Request(json={"name": fresh("src"), "source": source})


async def a_source(api: LiveApi) -> Request:
    """A standing source whose first check (due at once after it is added) has been recorded:
    the next one is a retry backoff away, so the route tried next does not race the watcher's
    own append to the source (a conflict a user would also get, and could simply retry)."""
    request = await a_new_source(api)
    name = request.json["name"]
    await as_admin(api, "POST", "/api/v1/sources", json=request.json)

    async def checked() -> bool:
        listed = (await as_admin(api, "GET", "/api/v1/sources")).json()
        return any(s["name"] == name and s["last_checked_at"] for s in listed)

    await eventually(checked, f"the first check of source {name} recorded")
    return Request(values={"name": name})


async def a_malformed_remote_publish(api: LiveApi) -> Request:
    return Request(json={"source": {"kind": "oci", "url": "oci://127.0.0.1/charts/x:1.0"}})


async def new_credentials(api: LiveApi) -> Request:
    return Request(
        values={"name": fresh("creds")}, json={"kind": "basic", "username": "u", "password": "p"}
    )


async def stored_credentials(api: LiveApi) -> Request:
    name = fresh("creds")
    api.hub.source_credentials.set(name, Credential(kind="token", token="t0ken-for-matrix"))
    return Request(values={"name": name})


async def a_new_project(api: LiveApi) -> Request:
    return Request(json={"name": fresh("proj"), "quotas": {"clusters": 3}})


async def a_project(api: LiveApi) -> Request:
    request = await a_new_project(api)
    await as_admin(api, "POST", "/api/v1/projects", json=request.json)
    return Request(values={"name": request.json["name"]}, json={"clusters": 5})


async def no_shares(api: LiveApi) -> Request:
    return Request(json={"tasksets": [], "blueprints": []})


V, P, A = Role.viewer, Role.publisher, Role.admin
CASES: list[Case] = [
    Case("GET", "/healthz", None),
    Case("GET", "/api/v1/openapi.json", None),
    Case("GET", "/", None),
    Case("GET", "/app.js", None),
    Case("GET", "/style.css", None),
    Case("GET", "/metrics", V),
    Case("GET", "/api/v1/whoami", V),
    Case("GET", "/api/v1/events", V),
    Case("GET", "/api/v1/events/stream", V, stream=True),
    Case("GET", "/api/v1/events/verify", V),
    Case("POST", "/api/v1/stream-tickets", V, ok=201),
    Case("GET", "/api/v1/status", V),
    Case("GET", "/api/v1/fleet", V),
    Case("GET", "/api/v1/clusters", V),
    Case("GET", "/api/v1/clusters/east", V),
    Case("GET", "/api/v1/clusters/east/state", V),
    Case("GET", "/api/v1/tasksets", V),
    Case("GET", "/api/v1/tasksets/settings", V),
    Case("GET", "/api/v1/tasksets/settings/overrides", V),
    Case("GET", "/api/v1/tasksets/settings/overrides-preview", V, params={"cluster": "east"}),
    Case("POST", "/api/v1/tasksets", P, ok=201, prepare=an_upload),
    Case("POST", "/api/v1/tasksets/{name}/retire", P, prepare=a_published_taskset),
    Case("POST", "/api/v1/tasksets/{name}/rollback", P, prepare=a_taskset_to_roll_back),
    Case("PUT", "/api/v1/tasksets/settings/overrides/{name}", P, prepare=an_override),
    Case("DELETE", "/api/v1/tasksets/settings/overrides/{name}", P, prepare=an_override_to_remove),
    Case("POST", "/api/v1/tasksets/{name}/rollout/resume", P, prepare=a_halted_rollout),
    Case("POST", "/api/v1/clusters", A, ok=201, prepare=a_new_cluster),
    Case("PATCH", "/api/v1/clusters/{name}/labels", A, prepare=a_label_change),
    Case("DELETE", "/api/v1/clusters/{name}", A, prepare=a_registered_cluster),
    Case("POST", "/api/v1/clusters/{name}/drain", A, prepare=a_registered_cluster),
    Case("GET", "/api/v1/blueprints", V),
    Case("GET", "/api/v1/blueprints/{name}", V, prepare=a_blueprint),
    Case("GET", "/api/v1/blueprints/{name}/diff", V, prepare=a_blueprint),
    Case("GET", "/api/v1/blueprints/{name}/status", V, prepare=a_blueprint),
    Case("POST", "/api/v1/blueprints", P, prepare=a_new_blueprint),
    Case("PUT", "/api/v1/blueprints/{name}/clusters/east", P, prepare=a_blueprint),
    Case(
        "DELETE",
        "/api/v1/blueprints/{name}/clusters/east",
        P,
        ok=204,
        prepare=an_assigned_blueprint,
    ),
    Case("POST", "/api/v1/blueprints/{name}/clusters/east/sync", P, ok=202, prepare=a_blueprint),
    Case("POST", "/api/v1/tasksets/remote", P, ok=400, prepare=a_malformed_remote_publish),
    Case("GET", "/api/v1/sources", V),
    Case("POST", "/api/v1/sources", P, ok=201, prepare=a_new_source),
    Case("DELETE", "/api/v1/sources/{name}", P, prepare=a_source),
    Case("POST", "/api/v1/sources/{name}/sync", P, prepare=a_source),
    Case("GET", "/api/v1/source-credentials", A),
    Case("PUT", "/api/v1/source-credentials/{name}", A, prepare=new_credentials),
    Case("DELETE", "/api/v1/source-credentials/{name}", A, prepare=stored_credentials),
    Case("GET", "/api/v1/tokens", A),
    Case("POST", "/api/v1/tokens", A, ok=201, prepare=a_new_token),
    Case("DELETE", "/api/v1/tokens/{token}", A, prepare=a_spare_token),
    Case("POST", "/api/v1/tokens/{token}/rotate", A, prepare=a_spare_token_to_rotate),
    Case("GET", "/api/v1/notifications", V),
    Case("GET", "/api/v1/notifications/status", V),
    Case("POST", "/api/v1/notifications", A, ok=201, prepare=a_new_subscription),
    Case("DELETE", "/api/v1/notifications/{name}", A, prepare=a_subscription),
    Case("GET", "/api/v1/snapshots", V),
    Case("POST", "/api/v1/snapshots", A),
    Case("GET", "/api/v1/leases", V),
    Case("GET", "/api/v1/keys", A),
    Case("POST", "/api/v1/keys/rotate", A, prepare=a_data_key_rotation),
    Case("POST", "/api/v1/keys/shred", A, prepare=a_cluster_to_shred),
    Case("GET", "/api/v1/charts/event-rate", V),
    Case("GET", "/api/v1/charts/convergence/settings", V),
    Case("GET", "/api/v1/charts/drift/east", V),
    Case("GET", "/api/v1/projects", V),
    Case("GET", "/api/v1/projects/default", V),
    Case("POST", "/api/v1/projects", A, ok=201, prepare=a_new_project),
    Case("PUT", "/api/v1/projects/{name}/quotas", A, prepare=a_project),
    Case("PUT", "/api/v1/projects/default/shares", A, prepare=no_shares),
]


def expected_status(case: Case, role: Role | None) -> int:
    if case.needs is None:
        return case.ok
    if role is None:
        return 401
    return case.ok if RANK[role] >= RANK[case.needs] else 403


async def call(client: httpx.AsyncClient, api: LiveApi, case: Case) -> tuple[int, str]:
    request = await case.prepare(api) if case.prepare else Request()
    path = case.path.format(**request.values)
    if case.stream:
        async with client.stream(case.method, path, params=case.params) as response:
            return response.status_code, ""
    response = await client.request(
        case.method,
        path,
        params=case.params,
        json=request.json,
        data=request.form,
        files=request.files,
    )
    return response.status_code, response.text[:200]


async def test_every_route_answers_401_403_or_success_by_role(
    event_store: EventStore, tmp_path: Path
) -> None:
    pki = HubPki(tmp_path / "pki")
    pki.ensure_ca(datetime.now(UTC))
    await append_each(event_store, [registered("east")])
    mismatches: list[str] = []
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        api.hub.enrollment = BundleEnrollment(
            pki=pki,
            hub_urls=["tls://hub.example:443"],
            authority=NatsAuthority.open(tmp_path),
        )
        api.hub.history = LogStateHistory(api.hub.store)
        api.hub.notifications = Notifier(
            api.hub.store, api.hub.reports, SubscriptionStore(tmp_path / "notifications.json")
        )
        api.hub.snapshots = api.hub.history
        await as_admin(
            api,
            "POST",
            "/api/v1/tasksets",
            data={"spec": json.dumps({"name": "settings", "namespace": "web"})},
            files={"source": ("settings.yaml", CONFIGMAP)},
        )
        await projected(api)
        for case in CASES:
            for role in ROLES:
                async with api.client(role) as client:
                    status, text = await call(client, api, case)
                want = expected_status(case, role)
                if status != want:
                    who = role.value if role else "no token"
                    mismatches.append(
                        f"{case.method} {case.path} as {who}: {status}, want {want}: {text}"
                    )
    assert not mismatches, "\n".join(mismatches)


async def test_the_matrix_covers_every_route_of_the_app(
    event_store: EventStore, tmp_path: Path
) -> None:
    hub = HubContext.for_store(event_store, tmp_path)
    app = create_app(hub)
    calls = [(case.method, re.sub(r"\{[^}]+\}", "x", case.path)) for case in CASES]
    missing = []
    for route in describe_routes(app):
        if route["public"] or route["path"].startswith(OPENAPI_PATH):
            continue
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", route["path"]) + "$")
        for method in route["methods"]:
            if method in ("HEAD", "OPTIONS"):
                continue
            if not any(m == method and pattern.match(path) for m, path in calls):
                missing.append(f"{method} {route['path']}")
    assert not missing, f"routes missing from the auth matrix: {missing}"


async def test_an_unknown_or_revoked_token_is_refused_with_401(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api:
        async with api.client() as client:
            bogus = await client.get(
                "/api/v1/whoami", headers={"Authorization": "Bearer fbt_123456789abc_nope"}
            )
            garbage = await client.get("/api/v1/whoami", headers={"Authorization": "Bearer x"})
        assert bogus.status_code == 401
        assert garbage.status_code == 401
        assert bogus.json()["error"].startswith("the bearer token is not valid")
        assert bogus.headers["www-authenticate"].startswith("Bearer")

        async with api.client(Role.admin) as admin:
            made = (await admin.post("/api/v1/tokens", json={"role": "viewer"})).json()
            headers = {"Authorization": f"Bearer {made['token']}"}
            assert (await admin.get("/api/v1/whoami", headers=headers)).status_code == 200
            revoked = await admin.delete(f"/api/v1/tokens/{made['info']['name']}")
            assert revoked.status_code == 200
            assert (await admin.get("/api/v1/whoami", headers=headers)).status_code == 401


async def test_a_forbidden_answer_names_the_role_needed(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        response = await client.get("/api/v1/tokens")
    assert response.status_code == 403
    message = "this needs the admin role; token 'test-viewer' is a viewer"
    assert response.json() == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": message,
        "instance": "/api/v1/tokens",
        "error": message,
        "context": {"required": "admin", "role": "viewer"},
    }


async def test_tokens_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    record, token = await store.create(role=Role.publisher, name="ci", now=datetime.now(UTC))
    text = (tmp_path / "tokens.json").read_text()
    assert token not in text
    secret = token.removeprefix(f"fbt_{record.id}_")
    assert len(secret) >= 32
    assert secret not in text
    assert record.sha256 in text
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    reloaded = TokenStore(tmp_path / "tokens.json")
    principal = await reloaded.authenticate(token, now=datetime.now(UTC))
    assert principal is not None
    assert (principal.name, principal.role) == ("ci", Role.publisher)
    assert await reloaded.authenticate(token + "x", now=datetime.now(UTC)) is None


async def test_token_names_are_unique_labels(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    await store.create(role=Role.viewer, name="grafana", now=datetime.now(UTC))
    with pytest.raises(Exception, match="exists already"):
        await store.create(role=Role.admin, name="grafana", now=datetime.now(UTC))
    with pytest.raises(Exception, match="invalid token name"):
        await store.create(role=Role.admin, name="Not A Label", now=datetime.now(UTC))


async def test_the_admin_token_file_is_created_once_and_kept(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    path = tmp_path / "admin.token"
    first = await store.ensure_admin_token(path, now=datetime.now(UTC))
    again = await TokenStore(tmp_path / "tokens.json").ensure_admin_token(
        path, now=datetime.now(UTC)
    )
    assert first == again == path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    principal = await store.authenticate(first, now=datetime.now(UTC))
    assert principal is not None
    assert principal.role is Role.admin

    path.write_text("fbt_000000000000_stale\n")
    replaced = await store.ensure_admin_token(path, now=datetime.now(UTC))
    assert replaced != first
    assert await store.authenticate(first, now=datetime.now(UTC)) is None, (
        "the old admin token is revoked when replaced"
    )
    assert [r.name for r in await store.list()].count("admin") == 1


async def test_stream_tickets_expire_and_die_with_their_token(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "tokens.json")
    record, token = await tokens.create(role=Role.viewer, name="browser", now=datetime.now(UTC))
    principal = await tokens.authenticate(token, now=datetime.now(UTC))
    assert principal is not None
    tickets = StreamTickets(ttl=timedelta(seconds=60))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ticket, expires = tickets.issue(principal, now=now)
    assert expires == now + timedelta(seconds=60)
    assert await tickets.verify(ticket, tokens, now=now + timedelta(seconds=59)) == principal
    assert await tickets.verify(ticket, tokens, now=now + timedelta(seconds=61)) is None
    assert await StreamTickets().verify(ticket, tokens, now=now) is None, "another hub's key"
    tampered = ticket[:-2] + ("A" if ticket[-2] != "A" else "B") + ticket[-1]
    assert await tickets.verify(tampered, tokens, now=now) is None
    await tokens.revoke(record.name)
    assert await tickets.verify(ticket, tokens, now=now) is None


async def test_a_stream_ticket_opens_the_live_stream_and_nothing_else(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api:
        async with api.client(Role.viewer) as client:
            issued = await client.post("/api/v1/stream-tickets")
        ticket = issued.json()["ticket"]
        async with api.client() as anonymous:
            async with anonymous.stream(
                "GET", "/api/v1/events/stream", params={"ticket": ticket}
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                first = await asyncio.wait_for(anext(response.aiter_lines()), timeout=60)
                assert first.startswith(":")
            elsewhere = await anonymous.get("/api/v1/events", params={"ticket": ticket})
            forged = await anonymous.get("/api/v1/events/stream", params={"ticket": ticket + "x"})
        assert elsewhere.status_code == 401
        assert forged.status_code == 401
        assert "ticket" in forged.json()["error"]


T0 = datetime(2026, 6, 1, tzinfo=UTC)


async def test_a_token_works_until_it_expires_and_not_a_second_longer(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    record, token = await store.create(
        role=Role.viewer, name="short", lifetime=timedelta(hours=1), now=T0
    )
    assert record.expires_at == T0 + timedelta(hours=1)
    assert await store.authenticate(token, now=T0 + timedelta(minutes=59)) is not None
    assert await store.authenticate(token, now=T0 + timedelta(hours=1)) is None
    assert await store.expired_at(token, now=T0 + timedelta(hours=2)) == T0 + timedelta(hours=1)
    with pytest.raises(Exception, match="lifetime must be from 60 to 31536000 seconds"):
        await store.create(role=Role.viewer, name="forever", lifetime=timedelta(days=400), now=T0)


async def test_a_rotated_token_keeps_its_old_secret_for_the_grace_period_only(
    tmp_path: Path,
) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    record, old = await store.create(
        role=Role.publisher, name="ci", lifetime=timedelta(days=7), now=T0
    )
    later = T0 + timedelta(days=3)
    rotated, new = await store.rotate("ci", now=later, grace=timedelta(minutes=5))
    assert (rotated.id, rotated.name, rotated.role) == (record.id, "ci", Role.publisher)
    assert rotated.expires_at == later + timedelta(days=7), "the same lifetime again"
    assert new != old
    assert await store.authenticate(new, now=later) is not None
    assert await store.authenticate(old, now=later + timedelta(minutes=4)) is not None
    assert await store.authenticate(old, now=later + timedelta(minutes=5)) is None
    _, newest = await store.rotate("ci", now=later, grace=timedelta(0))
    assert await store.authenticate(new, now=later) is None, "no grace: the old secret dies at once"
    assert await store.authenticate(newest, now=later) is not None


async def test_rotating_the_admin_token_rewrites_the_hub_admin_token_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    path = tmp_path / "admin.token"
    first = await store.ensure_admin_token(path, now=T0)
    assert (await store.list())[0].expires_at == T0 + timedelta(days=30)
    _, rotated = await store.rotate("admin", now=T0 + timedelta(days=1))
    assert path.read_text().strip() == rotated != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_an_expired_admin_token_is_replaced_when_the_hub_starts(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    path = tmp_path / "admin.token"
    first = await store.ensure_admin_token(path, now=T0)
    again = await store.ensure_admin_token(path, now=T0 + timedelta(days=29))
    assert again == first
    replaced = await store.ensure_admin_token(path, now=T0 + timedelta(days=31))
    assert replaced != first
    assert await store.authenticate(replaced, now=T0 + timedelta(days=31)) is not None


async def test_an_expired_token_is_a_401_saying_so_and_a_rotated_one_works_over_the_api(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.admin) as admin:
        past = datetime.now(UTC) - timedelta(days=2)
        _, stale = await api.hub.tokens.create(
            role=Role.viewer, name="stale", lifetime=timedelta(days=1), now=past
        )
        headers = {"Authorization": f"Bearer {stale}"}
        refused = await admin.get("/api/v1/whoami", headers=headers)
        assert refused.status_code == 401
        assert "the bearer token expired at " in refused.json()["detail"]
        rotated = await admin.post("/api/v1/tokens/stale/rotate", json={"grace_seconds": 0})
        assert rotated.status_code == 200, rotated.text
        fresh = {"Authorization": f"Bearer {rotated.json()['token']}"}
        assert (await admin.get("/api/v1/whoami", headers=fresh)).json()["name"] == "stale"
        too_long = await admin.post("/api/v1/tokens/stale/rotate", json={"grace_seconds": -1})
        assert too_long.status_code == 400
        assert too_long.json()["errors"][0]["field"] == "grace_seconds"
