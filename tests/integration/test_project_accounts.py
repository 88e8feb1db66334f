"""Each project is its own NATS account, made and kept by the hub from the project's events.

A real hub nats-server in operator mode: creating a project makes its account on the server
with the JetStream limits of its quotas, changing the quotas changes them with no config change
and no reload, the default project keeps FLEET as it is, and a hub start reconciles every
project's account and pushes nothing the servers already hold.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials

import access.service
from access.account_push import AccountPublisher
from access.nats_accounts import FLEET_ACCOUNT, FLEET_LIMITS, NatsAuthority, credentials_jwt
from access.nats_jwt import decode, new_nkey
from access.project_accounts import (
    CONSUMERS_PER_CLUSTER,
    PROJECT_STREAMS,
    STORAGE_PER_CLUSTER,
    ProjectAccountService,
)
from api.auth import PROJECT_HEADER, Role
from events.catalog import TaskApplied
from events.store import EventStore, connect
from fleetbus.edgehub import EdgeServices
from fleetbus.enrollment import connect_api_to_edges
from registry.clusters import cluster_subject
from registry.projects import create_project, project_subject, set_project_quotas
from simulator.executor import SimExecutor
from taskset.projects import ProjectQuotas
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.integration.api_harness import live_api
from tests.integration.edge_harness import (
    EdgeHub,
    cluster_task,
    edge_hub,
    leaf_connections,
    sample_taskset,
)


async def login(url: str, authority: NatsAuthority, account: str) -> NatsClient:
    creds = authority.user_credentials(account, new_nkey("user"), "probe")
    return await nats.connect(url, user_credentials=RawCredentials(creds), max_reconnect_attempts=0)


async def account_limits(url: str, authority: NatsAuthority, account: str) -> tuple[int, ...]:
    """(storage, streams, consumers) the server applies to `account`, asked as its user."""
    nc = await login(url, authority, account)
    try:
        info = await nc.jetstream().account_info()
        return (info.limits.max_storage, info.limits.max_streams, info.limits.max_consumers)
    finally:
        await nc.close()


def derived(clusters: int) -> tuple[int, ...]:
    return (
        clusters * STORAGE_PER_CLUSTER,
        clusters + PROJECT_STREAMS,
        clusters * CONSUMERS_PER_CLUSTER,
    )


async def test_a_new_project_is_an_account_on_the_server_with_its_quotas_limits(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        url = hub.server.client_url
        config_before = hub.server.config_path.read_bytes()
        pid_before = hub.server.process.pid if hub.server.process else None
        projects = hub.services.projects
        await create_project(
            hub.store,
            "team-a",
            quotas=ProjectQuotas(clusters=3),
            actor="admin",
            now=datetime.now(UTC),
        )
        async with asyncio.timeout(20):
            await projects.wait_applied(await hub.store.subject_version(project_subject("team-a")))
        authority = hub.data.nats_authority()
        assert authority.public_key("project-team-a") != authority.public_key(FLEET_ACCOUNT)
        assert await account_limits(url, authority, "project-team-a") == derived(3)

        await set_project_quotas(
            hub.store, "team-a", ProjectQuotas(clusters=5), actor="admin", now=datetime.now(UTC)
        )
        async with asyncio.timeout(20):
            await projects.wait_applied(await hub.store.subject_version(project_subject("team-a")))
        assert await account_limits(url, authority, "project-team-a") == derived(5)
        # Pushed, not reloaded: the same server process with the same config.
        assert hub.server.config_path.read_bytes() == config_before
        assert hub.server.process is not None
        assert hub.server.process.pid == pid_before
        # The default project keeps FLEET, with its limits, as a single-team hub always had.
        fleet = await account_limits(url, authority, FLEET_ACCOUNT)
        assert fleet[2] == FLEET_LIMITS.consumers


async def test_a_hub_start_reconciles_every_project_account_once(
    hub_nats: HubNats, event_store: EventStore
) -> None:
    # Projects recorded while no hub service ran: their accounts do not exist yet.
    now = datetime.now(UTC)
    await create_project(
        event_store, "team-a", quotas=ProjectQuotas(clusters=2), actor="a", now=now
    )
    await create_project(event_store, "team-b", actor="a", now=now)
    await set_project_quotas(event_store, "team-b", ProjectQuotas(clusters=1), actor="a", now=now)
    publisher = AccountPublisher([hub_nats.url], hub_nats.data.system_credentials)
    authority = hub_nats.data.nats_authority()
    assert "project-team-a" not in authority.accounts

    async def start_once() -> ProjectAccountService:
        nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
        service = ProjectAccountService(
            EventStore(nc), authority=hub_nats.data.nats_authority(), publisher=publisher
        )
        ready = asyncio.Event()
        task = asyncio.create_task(service.run(ready))
        try:
            async with asyncio.timeout(30):
                await ready.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await nc.close()
        return service

    first = await start_once()
    assert first.pushes == 2
    authority = hub_nats.data.nats_authority()
    assert await account_limits(hub_nats.url, authority, "project-team-a") == derived(2)
    assert await account_limits(hub_nats.url, authority, "project-team-b") == derived(1)
    keys = {name: authority.public_key(name) for name in ("project-team-a", "project-team-b")}

    second = await start_once()
    assert second.pushes == 0
    again = hub_nats.data.nats_authority()
    assert {name: again.public_key(name) for name in keys} == keys
    assert await account_limits(hub_nats.url, again, "project-team-b") == derived(1)


class RecordingWaits:
    """The hub's project account service, noting which event each API answer waited for."""

    def __init__(self, service: ProjectAccountService) -> None:
        self.service = service
        self.waited: list[int] = []

    async def wait_applied(self, seq: int) -> None:
        await self.service.wait_applied(seq)
        self.waited.append(seq)


async def test_the_api_answers_a_project_create_once_its_account_is_on_the_server(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub, live_api(hub.store, hub.data.root) as api:
        waits = RecordingWaits(hub.services.projects)
        api.hub.project_accounts = waits
        headers = {"Authorization": f"Bearer {api.tokens[Role.admin]}"}
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as http:
            created = await http.post(
                "/api/v1/projects", json={"name": "payments", "quotas": {"clusters": 2}}
            )
            assert created.status_code == 201, created.text
            assert waits.waited == [await hub.store.subject_version(project_subject("payments"))]
            # No waiting here: the answer came once the account was effective.
            authority = hub.data.nats_authority()
            url = hub.server.client_url
            assert await account_limits(url, authority, "project-payments") == derived(2)
            changed = await http.put("/api/v1/projects/payments/quotas", json={"clusters": 4})
            assert changed.status_code == 200, changed.text
            assert waits.waited[-1] == await hub.store.subject_version(project_subject("payments"))
            assert len(waits.waited) == 2
            assert await account_limits(url, authority, "project-payments") == derived(4)


async def new_project(hub: EdgeHub, name: str, **quotas: int) -> None:
    await create_project(
        hub.store, name, quotas=ProjectQuotas(**quotas), actor="admin", now=datetime.now(UTC)
    )
    async with asyncio.timeout(20):
        await hub.services.projects.wait_applied(
            await hub.store.subject_version(project_subject(name))
        )


async def test_a_project_cluster_is_a_user_of_its_project_account_and_its_loop_runs(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        await new_project(hub, "team-a", clusters=2)
        cluster = "team-a--east"
        bundle = await hub.register(cluster)
        authority = hub.data.nats_authority()
        issuer = decode(credentials_jwt(bundle.creds_file.read_text()))["iss"]
        assert issuer == authority.public_key("project-team-a")
        assert issuer != authority.public_key(FLEET_ACCOUNT)

        sim = SimExecutor(name=cluster)
        await hub.start_edge(bundle, executor=sim)
        await hub.write_desired(cluster_task(cluster, sample_taskset("web"), generation=2))
        await eventually(lambda: "web" in sim.applied, what="the project cluster applied web")

        async def reported() -> bool:
            return any(
                isinstance(event, TaskApplied) and origin == cluster and event.generation == 2
                for origin, event, _ in await hub.reports()
            )

        await eventually(reported, what="its TaskApplied sourced into REPORTS")
        await eventually(
            lambda: cluster in hub.services.antientropy.last_seen, what="its inventory digest"
        )
        # The leaf connection lands in the project's account, not in FLEET.
        leaf_accounts = {leaf.get("account") for leaf in leaf_connections(hub.server)}
        assert leaf_accounts == {authority.public_key("project-team-a")}

        # Removed: its key is revoked in its project's account (its leaf is dropped) and the
        # links of its subjects are gone from both accounts.
        user_key = decode(credentials_jwt(bundle.creds_file.read_text()))["sub"]
        await hub.deregister(cluster)
        await eventually(lambda: leaf_connections(hub.server) == [], what="its leaf dropped")
        publisher = hub.services.publisher
        held = await publisher.lookup(authority.public_key("project-team-a"))
        assert held is not None
        claims = decode(held)["nats"]
        assert user_key in claims.get("revocations", {})
        assert "imports" not in claims
        assert "exports" not in claims
        fleet = await publisher.lookup(authority.public_key(FLEET_ACCOUNT))
        assert fleet is not None
        assert "imports" not in decode(fleet)["nats"]


async def test_a_hub_restart_keeps_a_project_clusters_loop_and_pushes_no_project_account(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        await new_project(hub, "team-a", clusters=2)
        cluster = "team-a--east"
        sim = SimExecutor(name=cluster)
        await hub.start_edge(await hub.register(cluster), executor=sim)
        web = sample_taskset("web")
        await hub.write_desired(cluster_task(cluster, web, generation=1))
        await eventually(lambda: "web" in sim.applied, what="generation 1 applied")

        # The hub's services stop and start again on the same data dir and servers.
        await hub.services.stop()
        again = EdgeServices(
            store=hub.store, urls=[hub.server.client_url], data=hub.data, leaf_urls=[hub.leaf_url]
        )
        try:
            await again.start()
            assert again.projects.pushes == 0
            assert set(again.projects.limits) == {"team-a"}
            await hub.write_desired(cluster_task(cluster, web, generation=2))
            await eventually(
                lambda: sim.applied["web"].generation == 2, what="generation 2 applied"
            )
            await eventually(
                lambda: cluster in again.antientropy.last_seen, what="its inventory after"
            )
        finally:
            await again.stop()


async def test_a_cluster_whose_links_would_overgrow_an_account_jwt_is_refused_writing_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with edge_hub(tmp_path) as hub, live_api(hub.store, hub.data.root) as api:
        connect_api_to_edges(api.hub, hub.services)
        await new_project(hub, "team-a")
        headers = {"Authorization": f"Bearer {api.tokens[Role.admin]}", PROJECT_HEADER: "team-a"}
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as http:
            first = await http.post("/api/v1/clusters", json={"name": "east"})
            assert first.status_code == 201, first.text
            # Room for what FLEET holds now, not for another cluster's ~1.1 KB of links.
            held = len(hub.services.access.account_jwt(FLEET_ACCOUNT))
            monkeypatch.setattr(access.service, "MAX_ACCOUNT_JWT_BYTES", held + 300)
            refused = await http.post("/api/v1/clusters", json={"name": "west"})
            assert refused.status_code == 409, refused.text
            detail = refused.json()["detail"]
            assert "team-a--west" in detail
            assert f"over the limit of {held + 300} bytes" in detail
            assert await hub.store.subject_version(cluster_subject("team-a--west")) == 0
            # A default-project cluster needs no links, so it is not held to it.
            plain = await http.post(
                "/api/v1/clusters", json={"name": "alpha"}, headers={PROJECT_HEADER: "default"}
            )
            assert plain.status_code == 201, plain.text
