"""The isolation matrix: a project's tokens cannot list, read, write, stream or learn the names of
another project's objects, over every route of the API and its live stream.

Project `team-b` holds a cluster, a taskset, an override, a blueprint, a source and a token, all
named `bravo-...`. An admin of project `team-a` then calls every route of the app (a route
without a row fails `test_the_isolation_matrix_has_a_row_for_every_route`):

- `list` rows answer 2xx without a trace of team-b (neither its name nor any `bravo` name);
- `target` rows aim at team-b's objects, by their short and by their full names, and must get
  exactly the answer a name that exists nowhere gets (so not even existence leaks); afterwards
  team-b's objects are checked unchanged;
- `own` rows act in team-a and must succeed without a trace of team-b;
- `org` rows are hub-wide and refuse project tokens with 403.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from access.nats_accounts import NatsAuthority
from access.pki import HubPki
from api.app import OPENAPI_PATH, create_app, describe_routes
from api.auth import PROJECT_HEADER, Role
from api.context import HubContext
from api.oidc import OidcConfig, OidcVerifier, RoleMapping
from events.store import EventStore
from fleetbus.enrollment import BundleEnrollment, LogStateHistory
from notify.service import Notifier
from notify.store import SubscriptionStore
from tests.integration.api_harness import LiveApi, live_api, projected
from tests.integration.test_api_events import append_each, published
from tests.integration.test_api_fleet import PATCH
from tests.integration.test_api_tasksets import CONFIGMAP
from tests.integration.test_oidc import AUDIENCE, Issuer, serve_issuer

Kind = Literal["list", "target", "own", "org"]
LEAKS = re.compile(r"bravo|team-b")

B_NAMES = {
    "cluster": "bravo-east",
    "taskset": "bravo-web",
    "override": "bravo-ov",
    "blueprint": "bravo-stack",
    "source": "bravo-src",
    "token": "bravo-admin",
    "project": "team-b",
}
GHOSTS = {
    "cluster": "ghost-east",
    "taskset": "ghost-web",
    "override": "ghost-ov",
    "blueprint": "ghost-stack",
    "source": "ghost-src",
    "token": "ghost-admin",
    "project": "team-z",
}


@dataclass(frozen=True)
class Row:
    """One route, and how a team-a admin calls it. `{cluster}`-style fields in the path, the
    query and the body are filled with team-b's names (or, to compare, with names of nothing)."""

    method: str
    path: str
    kind: Kind
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    upload: bool = False


ROWS: list[Row] = [
    Row("GET", "/metrics", "list"),
    Row("GET", "/api/v1/whoami", "own"),
    Row("GET", "/api/v1/events", "list"),
    Row("GET", "/api/v1/events", "list", params={"stream": "reports"}),
    Row("GET", "/api/v1/events", "target", params={"cluster": "{cluster}"}),
    Row("GET", "/api/v1/events", "target", params={"taskset": "{taskset}"}),
    Row("GET", "/api/v1/events/stream", "list"),  # test_the_live_stream_carries_no_other_project
    Row("POST", "/api/v1/stream-tickets", "own"),
    Row("GET", "/api/v1/status", "list"),
    Row("GET", "/api/v1/fleet", "list"),
    Row("GET", "/api/v1/fleet", "list", params={"state": "pending"}),
    Row("GET", "/api/v1/fleet", "target", params={"taskset": "{taskset}"}),
    Row("GET", "/api/v1/events/verify", "org"),
    Row("GET", "/api/v1/status", "target", params={"taskset": "{taskset}"}),
    Row("GET", "/api/v1/clusters", "list"),
    Row("GET", "/api/v1/clusters", "list", params={"all": "true"}),
    Row("GET", "/api/v1/clusters/{cluster}", "target"),
    Row("GET", "/api/v1/clusters/{cluster}/state", "target"),
    Row("GET", "/api/v1/tasksets", "list"),
    Row("GET", "/api/v1/tasksets/{taskset}", "target"),
    Row("GET", "/api/v1/tasksets/{taskset}/overrides", "target"),
    Row(
        "GET",
        "/api/v1/tasksets/{taskset}/overrides-preview",
        "target",
        params={"cluster": "{cluster}"},
    ),
    Row("POST", "/api/v1/tasksets", "own", upload=True),
    Row("POST", "/api/v1/tasksets/{taskset}/retire", "target", json={"reason": "x"}),
    Row("POST", "/api/v1/tasksets/{taskset}/rollback", "target", json={"to_version": 1}),
    Row(
        "PUT",
        "/api/v1/tasksets/{taskset}/overrides/{override}",
        "target",
        json={"cluster": "{cluster}", "patches": [PATCH]},
    ),
    Row("DELETE", "/api/v1/tasksets/{taskset}/overrides/{override}", "target"),
    Row("POST", "/api/v1/tasksets/{taskset}/rollout/resume", "target"),
    Row("POST", "/api/v1/clusters", "own", json={"name": "alpha-new", "labels": {}}),
    Row("PATCH", "/api/v1/clusters/{cluster}/labels", "target", json={"set": {"x": "y"}}),
    Row("DELETE", "/api/v1/clusters/{cluster}", "target"),
    Row("POST", "/api/v1/clusters/{cluster}/drain", "target"),
    Row("GET", "/api/v1/blueprints", "list"),
    Row("GET", "/api/v1/blueprints/{blueprint}", "target"),
    Row("GET", "/api/v1/blueprints/{blueprint}/diff", "target"),
    Row("GET", "/api/v1/blueprints/{blueprint}/status", "target"),
    Row(
        "POST",
        "/api/v1/blueprints",
        "target",
        json={"blueprint": {"name": "alpha-stack", "entries": [{"taskset": "{taskset}"}]}},
    ),
    Row("PUT", "/api/v1/blueprints/{blueprint}/clusters/{cluster}", "target", json={}),
    Row("DELETE", "/api/v1/blueprints/{blueprint}/clusters/{cluster}", "target"),
    Row("POST", "/api/v1/blueprints/{blueprint}/clusters/{cluster}/sync", "target"),
    Row(
        "POST",
        "/api/v1/tasksets/remote",
        "target",
        json={
            "name": "{taskset}",
            "source": {"kind": "oci", "url": "oci://127.0.0.1/charts/x:1.0"},
        },
    ),
    Row("GET", "/api/v1/sources", "list"),
    Row(
        "POST",
        "/api/v1/sources",
        "own",
        json={
            "name": "alpha-src",
            "source": {"kind": "git", "url": "git://127.0.0.1/a.git", "ref": "main"},
        },
    ),
    Row("DELETE", "/api/v1/sources/{source}", "target"),
    Row("POST", "/api/v1/sources/{source}/sync", "target"),
    Row("GET", "/api/v1/source-credentials", "org"),
    Row("PUT", "/api/v1/source-credentials/x", "org", json={"kind": "token", "token": "t"}),
    Row("DELETE", "/api/v1/source-credentials/x", "org"),
    Row("GET", "/api/v1/tokens", "list"),
    Row("POST", "/api/v1/tokens", "own", json={"role": "viewer", "name": "alpha-viewer"}),
    Row("DELETE", "/api/v1/tokens/{token}", "target"),
    Row("POST", "/api/v1/tokens/{token}/rotate", "target", json={"grace_seconds": 0}),
    Row("GET", "/api/v1/notifications", "org"),
    Row("GET", "/api/v1/notifications/status", "org"),
    Row("POST", "/api/v1/notifications", "org", json={"name": "h", "url": "http://127.0.0.1:9"}),
    Row("DELETE", "/api/v1/notifications/x", "org"),
    Row("GET", "/api/v1/snapshots", "org"),
    Row("POST", "/api/v1/snapshots", "org"),
    Row("GET", "/api/v1/leases", "org"),
    Row("GET", "/api/v1/keys", "org"),
    Row("POST", "/api/v1/keys/rotate", "org", json={"kek": False, "data_keys": True}),
    Row("POST", "/api/v1/keys/shred", "org", json={"cluster": "{cluster}"}),
    Row("GET", "/api/v1/charts/event-rate", "list"),
    Row("GET", "/api/v1/charts/convergence/{taskset}", "target"),
    Row("GET", "/api/v1/charts/drift/{cluster}", "target"),
    Row("GET", "/api/v1/projects", "list"),
    Row("GET", "/api/v1/projects/{project}", "target"),
    Row("POST", "/api/v1/projects", "org", json={"name": "team-c"}),
    Row("PUT", "/api/v1/projects/{project}/quotas", "org", json={"clusters": 1}),
    Row("PUT", "/api/v1/projects/{project}/shares", "target", json={"tasksets": []}),
]


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    return value


def full(names: dict[str, str], project: str) -> dict[str, str]:
    """The same names as full names in `project` (the project itself stays as it is)."""
    return {k: v if k == "project" else f"{project}--{v}" for k, v in names.items()}


async def send(client: httpx.AsyncClient, row: Row, names: dict[str, str]) -> tuple[int, str]:
    path = fill(row.path, names)
    params = fill(row.params, names)
    if row.path.endswith("/stream"):
        async with client.stream(row.method, path, params=params) as response:
            return response.status_code, ""
    if row.upload:
        spec = json.dumps({"name": "alpha-upload", "namespace": "web"})
        response = await client.post(
            path, data={"spec": spec}, files={"source": ("s.yaml", CONFIGMAP)}
        )
    else:
        response = await client.request(row.method, path, params=params, json=fill(row.json, names))
    return response.status_code, response.text


TIMES = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?")


def masked(text: str, names: dict[str, str]) -> str:
    """The answer with the names asked for, and the moment it was given, left out."""
    for name in sorted(names.values(), key=len, reverse=True):
        text = text.replace(name, "<NAME>")
    return TIMES.sub("<TIME>", text)


@dataclass
class Tenants:
    api: LiveApi
    a_admin: str
    b_admin: str

    def client(self, token: str, project: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"}
        if project:
            headers[PROJECT_HEADER] = project
        return httpx.AsyncClient(base_url=self.api.url, headers=headers, timeout=30.0)


async def ok(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.text}"
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    return response.json()


async def upload(client: httpx.AsyncClient, name: str) -> None:
    spec = json.dumps({"name": name, "namespace": "web"})
    await ok(
        client, "POST", "/api/v1/tasksets", data={"spec": spec}, files={"source": ("s", CONFIGMAP)}
    )


async def populate(api: LiveApi) -> Tenants:
    """Projects team-a and team-b, each with a cluster, a taskset, and (team-b) more."""
    org = {"Authorization": f"Bearer {api.tokens[Role.admin]}"}
    async with httpx.AsyncClient(base_url=api.url, headers=org, timeout=30.0) as admin:
        for project in ("team-a", "team-b"):
            await ok(admin, "POST", "/api/v1/projects", json={"name": project})
        tokens = {}
        for project, name in (("team-a", "alpha-admin"), ("team-b", "bravo-admin")):
            made = await ok(
                admin,
                "POST",
                "/api/v1/tokens",
                json={"role": "admin", "name": name},
                headers={PROJECT_HEADER: project},
            )
            tokens[project] = made["token"]
    tenants = Tenants(api=api, a_admin=tokens["team-a"], b_admin=tokens["team-b"])
    async with tenants.client(tenants.a_admin) as a:
        await ok(a, "POST", "/api/v1/clusters", json={"name": "alpha-east", "labels": {"e": "1"}})
        await upload(a, "alpha-web")
    async with tenants.client(tenants.b_admin) as b:
        await ok(b, "POST", "/api/v1/clusters", json={"name": "bravo-east", "labels": {"e": "1"}})
        await upload(b, "bravo-web")
        await ok(
            b,
            "PUT",
            "/api/v1/tasksets/bravo-web/overrides/bravo-ov",
            json={"cluster": "bravo-east", "patches": [PATCH]},
        )
        await ok(
            b,
            "POST",
            "/api/v1/blueprints",
            json={"blueprint": {"name": "bravo-stack", "entries": [{"taskset": "bravo-web"}]}},
        )
        await projected(api)
        await ok(b, "PUT", "/api/v1/blueprints/bravo-stack/clusters/bravo-east", json={})
        source = {"kind": "git", "url": "git://127.0.0.1/b.git", "ref": "main"}
        await ok(b, "POST", "/api/v1/sources", json={"name": "bravo-src", "source": source})
    await append_each(api.hub.store, [published("team-b--bravo-web", 2)])
    await projected(api)
    return tenants


@pytest.fixture
async def tenants(event_store: EventStore, tmp_path: Path) -> AsyncIterator[Tenants]:
    pki = HubPki(tmp_path / "pki")
    pki.ensure_ca(datetime.now(UTC))
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        api.hub.enrollment = BundleEnrollment(
            pki=pki,
            hub_urls=["tls://hub.example:443"],
            authority=NatsAuthority.open(tmp_path),
        )
        api.hub.history = LogStateHistory(api.hub.store)
        api.hub.snapshots = api.hub.history
        api.hub.notifications = Notifier(
            api.hub.store, api.hub.reports, SubscriptionStore(tmp_path / "notifications.json")
        )
        yield await populate(api)


async def team_b_as_it_was(tenants: Tenants) -> list[str]:
    """What differs in team-b from how `populate` left it."""
    problems = []
    async with tenants.client(tenants.b_admin) as b:
        clusters = await ok(b, "GET", "/api/v1/clusters")
        if [(c["name"], c["labels"]) for c in clusters] != [("team-b--bravo-east", {"e": "1"})]:
            problems.append(f"clusters: {clusters}")
        tasksets = await ok(b, "GET", "/api/v1/tasksets")
        if [(t["name"], t["version"], t["retired"]) for t in tasksets] != [
            ("team-b--bravo-web", 2, False)
        ]:
            problems.append(f"tasksets: {tasksets}")
        overrides = await ok(b, "GET", "/api/v1/tasksets/bravo-web/overrides")
        if [o["name"] for o in overrides] != ["bravo-ov"]:
            problems.append(f"overrides: {overrides}")
        sources = await ok(b, "GET", "/api/v1/sources")
        if [s["name"] for s in sources] != ["team-b--bravo-src"]:
            problems.append(f"sources: {sources}")
        status = await ok(b, "GET", "/api/v1/blueprints/bravo-stack/status")
        if [row["cluster"] for row in status] != ["team-b--bravo-east"]:
            problems.append(f"blueprint assignment: {status}")
        whoami = await b.get("/api/v1/whoami")
        if whoami.status_code != 200:
            problems.append(f"team-b's admin token: {whoami.status_code}")
    return problems


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serve_issuer() as state:
        yield state


@pytest.fixture(params=["project token", "single sign-on"])
def a_admin(request: pytest.FixtureRequest, tenants: Tenants, issuer: Issuer) -> str:
    """team-a's admin: a project token, or a user whose OIDC group makes them team-a's admin."""
    if request.param == "project token":
        return tenants.a_admin
    tenants.api.hub.sso = OidcVerifier(
        OidcConfig(
            issuer=issuer.url,
            audience=AUDIENCE,
            roles=[RoleMapping(group="alpha-team", project="team-a", role=Role.admin)],
        )
    )
    return issuer.sign(groups=["alpha-team"], name="alpha-sso")


async def test_a_projects_admin_cannot_reach_another_project_by_any_route(
    tenants: Tenants, a_admin: str
) -> None:
    mismatches: list[str] = []
    async with tenants.client(a_admin) as a:
        for row in ROWS:
            where = f"{row.method} {row.path} {row.params or ''} [{row.kind}]"
            if row.kind == "org":
                status, text = await send(a, row, B_NAMES)
                if status != 403:
                    mismatches.append(f"{where}: {status}, want 403: {text[:200]}")
            elif row.kind in ("list", "own"):
                status, text = await send(a, row, B_NAMES)
                if status >= 300 or LEAKS.search(text):
                    mismatches.append(f"{where}: {status}, leaks or fails: {text[:300]}")
            else:
                for real, ghost in (
                    (B_NAMES, GHOSTS),
                    (full(B_NAMES, "team-b"), full(GHOSTS, "team-z")),
                ):
                    real_answer = await send(a, row, real)
                    ghost_answer = await send(a, row, ghost)
                    if (real_answer[0], masked(real_answer[1], real)) != (
                        ghost_answer[0],
                        masked(ghost_answer[1], ghost),
                    ):
                        mismatches.append(
                            f"{where} answers team-b's names differently from names of "
                            f"nothing: {real_answer} vs {ghost_answer}"
                        )
                    if LEAKS.search(masked(real_answer[1], real)):
                        mismatches.append(f"{where} leaks: {real_answer[1][:300]}")
    assert not mismatches, "\n".join(mismatches)
    assert await team_b_as_it_was(tenants) == []


async def test_what_a_project_lists_is_its_own(tenants: Tenants) -> None:
    """The list rows are not empty answers: team-a sees its own objects in them."""
    async with tenants.client(tenants.a_admin) as a:
        clusters = await ok(a, "GET", "/api/v1/clusters")
        tasksets = await ok(a, "GET", "/api/v1/tasksets")
        events = await ok(a, "GET", "/api/v1/events", params={"limit": 1000})
        projects = await ok(a, "GET", "/api/v1/projects")
        status = await ok(a, "GET", "/api/v1/status")
    assert [c["name"] for c in clusters] == ["team-a--alpha-east"]
    assert [t["name"] for t in tasksets] == ["team-a--alpha-web"]
    assert {e["type"] for e in events["events"]} >= {"ClusterRegistered", "TasksetPublished"}
    assert [p["name"] for p in projects] == ["team-a"]
    assert {c["name"] for c in status["clusters"]} == {"team-a--alpha-east"}
    async with tenants.client(tenants.api.tokens[Role.admin]) as org:
        everything = await ok(org, "GET", "/api/v1/clusters")
        narrowed = await ok(org, "GET", "/api/v1/clusters", headers={PROJECT_HEADER: "team-b"})
    assert {c["name"] for c in everything} == {"team-a--alpha-east", "team-b--bravo-east"}
    assert [c["name"] for c in narrowed] == ["team-b--bravo-east"]


async def test_a_projects_metrics_are_its_own_series(tenants: Tenants) -> None:
    for taskset in ("team-a--alpha-web", "team-b--bravo-web"):
        tenants.api.hub.metrics.tasks_applied.labels(taskset=taskset).inc()
    async with tenants.client(tenants.a_admin) as a:
        mine = (await a.get("/metrics")).text
    async with tenants.client(tenants.api.tokens[Role.admin]) as org:
        everything = (await org.get("/metrics")).text
    assert 'taskset="team-b--bravo-web"' in everything
    assert 'taskset="team-a--alpha-web"' in everything
    assert 'taskset="team-a--alpha-web"' in mine
    assert "team-b" not in mine
    assert "fleetbus_http_requests_total" not in mine, "hub-wide series are the org's"


async def test_a_project_token_cannot_act_in_another_project(tenants: Tenants) -> None:
    async with tenants.client(tenants.a_admin, project="team-b") as a:
        response = await a.get("/api/v1/clusters")
    assert response.status_code == 403
    assert response.json()["error"] == "'alpha-admin' has no role in project team-b"
    async with tenants.client(tenants.a_admin, project="team-z") as a:
        ghost = await a.get("/api/v1/clusters")
    assert ghost.status_code == 403, "a project that does not exist answers the same"
    assert ghost.json()["error"] == "'alpha-admin' has no role in project team-z"


async def test_the_live_stream_carries_no_other_project(tenants: Tenants) -> None:
    api = tenants.api
    received: list[str] = []
    async with (
        tenants.client(tenants.a_admin) as a,
        a.stream("GET", "/api/v1/events/stream") as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        await asyncio.wait_for(anext(lines), timeout=60)  # the opening comment
        await append_each(api.hub.store, [published("team-b--bravo-web", 3)])
        await append_each(api.hub.store, [published("team-a--alpha-web", 2)])
        async with asyncio.timeout(20):
            async for line in lines:
                received.append(line)
                if "team-a--alpha-web" in line:
                    break
    assert any("team-a--alpha-web" in line for line in received)
    assert not [line for line in received if LEAKS.search(line)]


async def test_the_isolation_matrix_has_a_row_for_every_route(
    event_store: EventStore, tmp_path: Path
) -> None:
    app = create_app(HubContext.for_store(event_store, tmp_path))
    calls = [(row.method, re.sub(r"\{[^}]+\}", "x", row.path)) for row in ROWS]
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
    assert not missing, f"routes missing from the isolation matrix: {missing}"


async def test_a_shared_taskset_is_readable_and_usable_but_not_writable_elsewhere(
    tenants: Tenants,
) -> None:
    async with tenants.client(tenants.a_admin) as a:
        unknown = await a.put("/api/v1/projects/team-a/shares", json={"tasksets": ["nope"]})
        assert unknown.status_code == 400
        assert "nothing published is named team-a--nope in project team-a" in unknown.text
        shared = await ok(
            a, "PUT", "/api/v1/projects/team-a/shares", json={"tasksets": ["alpha-web"]}
        )
        assert shared["shared_tasksets"] == ["team-a--alpha-web"]
    async with tenants.client(tenants.b_admin) as b:
        listed = await ok(b, "GET", "/api/v1/tasksets")
        detail = await ok(b, "GET", "/api/v1/tasksets/team-a--alpha-web")
        retire = await b.post("/api/v1/tasksets/team-a--alpha-web/retire", json={})
        override = await b.put(
            "/api/v1/tasksets/team-a--alpha-web/overrides/mine",
            json={"cluster": "bravo-east", "patches": [PATCH]},
        )
        stack = {"name": "bravo-base", "entries": [{"taskset": "team-a--alpha-web"}]}
        built = await b.post("/api/v1/blueprints", json={"blueprint": stack})
        events = await ok(b, "GET", "/api/v1/events", params={"limit": 1000})
    shown = {t["name"]: t for t in listed}
    assert set(shown) == {"team-b--bravo-web", "team-a--alpha-web"}
    assert shown["team-a--alpha-web"]["shared"] is True
    assert shown["team-a--alpha-web"]["placement"] == {}, "not where its owner places it"
    assert detail["published_by"] == ""
    assert [v["actor"] for v in detail["versions"]] == [""]
    assert not re.search("alpha-east|alpha-admin", json.dumps(detail))
    assert retire.status_code == 400, "read-only: another project's name is not a name here"
    assert override.status_code == 400
    assert built.status_code == 200, built.text
    assert [e["subject"] for e in events["events"] if "team-a" in json.dumps(e)] == [
        "fleet.evt.blueprint.team-b--bravo-base"
    ], "only team-b's own blueprint names it: the owner's events about it stay the owner's"
    async with tenants.client(tenants.a_admin) as a:
        still = await ok(a, "GET", "/api/v1/tasksets/alpha-web")
        assert still["taskset"]["retired"] is False
        await ok(a, "PUT", "/api/v1/projects/team-a/shares", json={})
    async with tenants.client(tenants.b_admin) as b:
        gone = await b.get("/api/v1/tasksets/team-a--alpha-web")
        again = await b.post("/api/v1/blueprints", json={"blueprint": stack})
    assert gone.status_code == 400
    assert again.status_code == 400, "unshared: it is another project's name again"
