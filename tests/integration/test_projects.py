"""Projects end to end: an old data dir belongs to `default`, the CLI acts in a project, and a
project's quotas refuse what would pass them, with nothing written."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from access.nats_accounts import NatsAuthority
from access.pki import HubPki
from api.auth import PROJECT_HEADER, Role
from api.context import HubContext
from api.tenancy import admit_publish
from events.catalog import ClusterRegistered, SourceAdded, SourceFailed, TasksetPublished
from events.codec import EventDecoder
from events.ids import new_event_id
from events.store import EventStore
from events.streams import EVENTS_STREAM
from fleetbus.client import PROJECT_ENV
from fleetbus.enrollment import BundleEnrollment
from registry.projects import create_project
from sources.fetch import FetchPolicy
from sources.references import HostAllowList
from sources.service import SourceWatcher, add_source
from taskset.projects import ProjectQuotas
from tests.eventually import eventually, eventually_value
from tests.integration.api_harness import LiveApi, live_api, projected, running_projector
from tests.integration.test_api_cli import as_local_hub, cli
from tests.integration.test_api_events import append_each, published
from tests.integration.test_api_tasksets import CONFIGMAP
from tests.source_servers import HelmRepository, helm_repository, make_chart

__all__ = ["helm_repository"]

FIXTURES = Path(__file__).parent.parent / "fixtures"
OLD_TOKEN = "fbt_0a1b2c3d4e5f_p2QqBLVU2cC5y8XbqzJ0m4cE9hK7sWnRrT1uV3xYzA0"


async def old_log(store: EventStore) -> list[str]:
    """The stored event fixtures written before projects existed, appended as a hub's log."""
    decoder = EventDecoder()
    types = []
    for path in sorted((FIXTURES / "events").glob("*.json")):
        event = decoder.decode(path.read_bytes())
        if event.type_name.startswith("Project") or not event.subject.startswith("fleet.evt."):
            continue
        await store.append([event])
        types.append(event.type_name)
    return types


def bearer(api: LiveApi, token: str, project: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"}
    if project:
        headers[PROJECT_HEADER] = project
    return httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30.0)


async def test_an_old_data_dir_and_log_belong_to_the_default_project(
    event_store: EventStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "old-hub"
    data_dir.mkdir()
    shutil.copy(FIXTURES / "datadir-before-projects" / "tokens.json", data_dir / "tokens.json")
    written = await old_log(event_store)
    assert "ClusterRegistered" in written
    assert "TasksetPublished" in written
    logged = await event_store.last_sequence()
    async with live_api(event_store, data_dir) as api:
        async with bearer(api, OLD_TOKEN) as old:
            whoami = (await old.get("/api/v1/whoami")).json()
            everything = (await old.get("/api/v1/events", params={"limit": 1000})).json()
            made = await old.post(
                "/api/v1/projects", json={"name": "team-x", "description": "a newcomer"}
            )
            scoped = await old.post(
                "/api/v1/tokens",
                json={"role": "viewer", "name": "default-viewer", "org_level": False},
            )
            elsewhere = await old.post(
                "/api/v1/tokens",
                json={"role": "viewer", "name": "x-viewer"},
                headers={PROJECT_HEADER: "team-x"},
            )
        assert whoami["org_level"] is True, "a token from before projects is org-level"
        assert (whoami["role"], whoami["project"]) == ("admin", "default")
        assert made.status_code == 201, "and an org admin: it creates projects"
        assert len(everything["events"]) == logged
        async with bearer(api, scoped.json()["token"]) as default_viewer:
            mine = (await default_viewer.get("/api/v1/events", params={"limit": 1000})).json()
        async with bearer(api, elsewhere.json()["token"]) as x_viewer:
            theirs = (await x_viewer.get("/api/v1/events", params={"limit": 1000})).json()
    seen = {record["type"] for record in mine["events"]}
    assert {"ClusterRegistered", "TasksetPublished", "OverrideSet", "BlueprintPublished"} <= seen
    assert "KeysRotated" not in seen, "hub-wide events are for org-level tokens"
    assert [record["type"] for record in theirs["events"]] == ["ProjectCreated"], (
        "another project sees its own creation and nothing of default's log"
    )


@pytest.fixture
async def hub(event_store: EventStore, tmp_path: Path) -> AsyncIterator[LiveApi]:
    pki = HubPki(tmp_path / "pki")
    pki.ensure_ca(datetime.now(UTC))
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        api.hub.enrollment = BundleEnrollment(
            pki=pki,
            hub_urls=["tls://hub.example:443"],
            authority=NatsAuthority.open(tmp_path),
        )
        yield api


async def test_the_cli_creates_a_project_and_acts_in_it(
    hub: LiveApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = as_local_hub(hub, tmp_path / "local")
    assert await cli("project", "create", "team-a", "--clusters", "1", *local) == 0
    assert capsys.readouterr().out == (
        "created project team-a (clusters 1, tasksets unlimited, log_bytes unlimited)\n"
    )
    assert await cli("project", "ls", "-o", "json", *local) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["default", "team-a"]

    args = ["--project", "team-a", *local]
    assert await cli("token", "create", "--role", "admin", "--name", "ops", *args) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    principal = await hub.hub.tokens.authenticate(token, now=datetime.now(UTC))
    assert principal is not None
    assert (principal.project, principal.role, principal.org_level) == ("team-a", Role.admin, False)

    as_ops = ["--server", hub.url, "--token", token]
    bundle = tmp_path / "east-bundle"
    assert await cli("cluster", "register", "east", "--out", str(bundle), *as_ops) == 0
    capsys.readouterr()
    assert json.loads((bundle / "cluster.json").read_text())["name"] == "team-a--east"
    assert await cli("cluster", "register", "west", *as_ops) == 2
    err = capsys.readouterr().err
    assert "project team-a has reached its quota clusters: 1 of 1 clusters used" in err
    monkeypatch.setenv(PROJECT_ENV, "team-a")
    assert await cli("cluster", "ls", "-o", "json", *local) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in listed] == ["team-a--east"]
    monkeypatch.delenv(PROJECT_ENV)
    assert await cli("cluster", "ls", "-o", "json", *as_ops, "--project", "default") == 2
    assert "'ops' has no role in project default" in capsys.readouterr().err

    assert await cli("project", "show", "team-a", *local) == 0
    shown = capsys.readouterr().out
    assert "clusters:    1 of 1" in shown
    assert "tasksets:    0 of no limit" in shown

    assert await cli("project", "share", "team-a", "--taskset", "ghost", *args) == 2
    assert "nothing published is named team-a--ghost" in capsys.readouterr().err
    assert await cli("project", "share", "team-a", *as_ops) == 0
    assert capsys.readouterr().out == "project team-a shares nothing\n"

    registered = [
        stored.event.cluster
        async for stored in hub.hub.store.read()
        if isinstance(stored.event, ClusterRegistered)
    ]
    assert registered == ["team-a--east"], "the refused cluster left nothing on the log"


async def publish(client: httpx.AsyncClient, name: str) -> httpx.Response:
    spec = json.dumps({"name": name, "namespace": "web"})
    return await client.post(
        "/api/v1/tasksets", data={"spec": spec}, files={"source": ("s.yaml", CONFIGMAP)}
    )


async def test_taskset_and_log_quotas_refuse_a_publish_and_write_nothing(hub: LiveApi) -> None:
    async with hub.client(Role.admin) as org:
        made = await org.post(
            "/api/v1/projects", json={"name": "small", "quotas": {"tasksets": 1, "log_bytes": 0}}
        )
        assert made.status_code == 201, made.text
        token = (
            await org.post(
                "/api/v1/tokens",
                json={"role": "publisher", "name": "ci"},
                headers={PROJECT_HEADER: "small"},
            )
        ).json()["token"]
    async with bearer(hub, token) as ci:
        first = await publish(ci, "web")
        assert first.status_code == 201, first.text
        assert first.json()["taskset"] == "small--web"
        await projected(hub)
        again = await publish(ci, "web")
        assert again.status_code == 201, "a new version of a live taskset takes no new slot"
        second = await publish(ci, "api")
        assert second.status_code == 403
        assert second.json()["error"].startswith(
            "project small has reached its quota tasksets: 1 of 1 tasksets used, adding 1 "
            "would exceed it"
        )
        assert second.json()["context"] == {
            "project": "small",
            "quota": "tasksets",
            "limit": 1,
            "used": 1,
            "adding": 1,
        }
    async with hub.client(Role.admin) as org:
        raised = await org.put(
            "/api/v1/projects/small/quotas", json={"tasksets": 5, "log_bytes": 100}
        )
        assert raised.status_code == 200, raised.text
        assert raised.json()["usage"]["tasksets"] == 1
    async with bearer(hub, token) as ci:
        too_big = await publish(ci, "api")
    assert too_big.status_code == 403
    assert "has reached its quota log_bytes" in too_big.json()["error"]
    published = [
        stored.event.taskset
        async for stored in hub.hub.store.read()
        if isinstance(stored.event, TasksetPublished)
    ]
    assert published == ["small--web"], "refused publishes left nothing on the log"


async def test_projects_refuse_bad_names_and_quotas_naming_the_field(hub: LiveApi) -> None:
    async with hub.client(Role.admin) as org:
        reserved = await org.post("/api/v1/projects", json={"name": "a--b"})
        negative = await org.post(
            "/api/v1/projects", json={"name": "ok", "quotas": {"clusters": -1}}
        )
        again = await org.post("/api/v1/projects", json={"name": "default"})
        unknown = await org.get("/api/v1/projects/nothing-here")
        nowhere = await org.post("/api/v1/clusters", json={"name": "ghost--east"})
    assert reserved.status_code == 400
    assert "'--' separates a project from a name" in reserved.json()["error"]
    assert negative.status_code == 400
    assert negative.json()["error"] == "quota clusters must be 0 (no limit) or more, got -1"
    assert again.status_code == 409
    assert unknown.status_code == 404
    assert nowhere.status_code == 400
    assert nowhere.json()["error"] == (
        "invalid cluster name 'ghost--east': there is no project ghost"
    )
    async with hub.client(Role.viewer) as viewer:
        forbidden = await viewer.post("/api/v1/projects", json={"name": "mine"})
    assert forbidden.status_code == 403


async def test_a_standing_source_is_held_to_its_projects_taskset_quota(
    event_store: EventStore, tmp_path: Path, helm_repository: HelmRepository
) -> None:
    helm_repository.add(make_chart(tmp_path / "charts", "nginx", "1.0.0"))
    await create_project(
        event_store,
        "small",
        quotas=ProjectQuotas(tasksets=1),
        actor="user:admin",
        now=datetime.now(UTC),
    )
    await append_each(event_store, [published("small--web")])
    hub = HubContext.for_store(event_store, tmp_path / "hub")
    stop = asyncio.Event()
    async with running_projector(hub) as projector:
        end = await event_store.last_sequence()
        await eventually(lambda: projector.positions.get(EVENTS_STREAM, 0) >= end, "projected")
        watcher = SourceWatcher(
            event_store,
            hub.charts,
            hub.source_credentials,
            FetchPolicy(allowed=HostAllowList.parse(["127.0.0.1"])),
            admit=functools.partial(admit_publish, hub),
        )
        now = datetime.now(UTC)
        await add_source(
            event_store,
            SourceAdded(
                id=new_event_id(),
                occurred_at=now,
                actor="user:small--ops",
                source="small--nginx",
                taskset="small--nginx",
                kind="helm-repo",
                url=helm_repository.url,
                chart="nginx",
                chart_version="^1.0",
            ),
        )
        task = asyncio.create_task(watcher.run(stop))
        try:

            async def refusal() -> SourceFailed | None:
                async with contextlib.aclosing(event_store.read()) as events:
                    async for stored in events:
                        if isinstance(stored.event, SourceFailed):
                            return stored.event
                return None

            failed = await eventually_value(refusal, "the source's failure")
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15)
    assert failed.stage == "publish"
    assert failed.reason.startswith("project small has reached its quota tasksets: 1 of 1")
    published_names = [
        stored.event.taskset
        async for stored in event_store.read()
        if isinstance(stored.event, TasksetPublished)
    ]
    assert published_names == ["small--web"]


async def test_names_in_a_publish_are_the_projects_own(hub: LiveApi) -> None:
    async with hub.client(Role.admin) as org:
        await org.post("/api/v1/projects", json={"name": "team-a"})
        headers = {PROJECT_HEADER: "team-a"}
        spec = {
            "name": "web",
            "namespace": "web",
            "placement": {"clusters": ["east"], "selector": "env=prod"},
            "depends_on": [],
        }
        made = await org.post(
            "/api/v1/tasksets",
            data={"spec": json.dumps(spec)},
            files={"source": ("s.yaml", CONFIGMAP)},
            headers=headers,
        )
        assert made.status_code == 201, made.text
        foreign = await org.post(
            "/api/v1/tasksets",
            data={"spec": json.dumps({**spec, "placement": {"clusters": ["team-b--east"]}})},
            files={"source": ("s.yaml", CONFIGMAP)},
            headers=headers,
        )
    assert foreign.status_code == 400
    assert "'--' is reserved" in foreign.json()["error"]
    [event] = [
        stored.event
        async for stored in hub.hub.store.read()
        if isinstance(stored.event, TasksetPublished)
    ]
    assert (event.taskset, event.placement.clusters) == ("team-a--web", ["team-a--east"])
