"""R6: every credential is refused wherever it does not belong.

Extends `test_cluster_isolation.py` (one cluster against another) with what a cluster's
credentials must never reach on the hub itself: the log, other clusters' desired state, stream
administration, the chart archives, the hub's own traffic, the HTTP API; and with the other
direction: API tokens are no NATS credentials. Each denial is paired with the same kind of
request on the cluster's own resources succeeding, so no case passes because nothing works.

"Cluster alpha's credentials" means a client of alpha's leaf nats-server: everything it sends
towards the hub travels over alpha's certificate and is checked against alpha's permissions.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from api.app import OPENAPI_PATH, create_app, describe_routes
from api.auth import Role
from api.context import HubContext
from events.catalog import ClusterRegistered, TaskApplied, TaskFailed
from events.codec import encode_event
from events.ids import new_event_id
from events.store import EventStore
from events.streams import DESIRED_STREAM, EVENTS_STREAM, REPORTS_STREAM
from fleetbus.bundle import EdgeBundle
from fleetbus.edge import EdgeRuntime
from projector.db import ProjectionDb
from simulator.executor import SimExecutor
from tests.eventually import eventually
from tests.faults.harness import record_figures
from tests.faults.projection import start_projector
from tests.integration.api_harness import live_api
from tests.integration.edge_harness import EdgeHub, cluster_task, edge_hub, sample_taskset

DENIED = (nats.errors.NoRespondersError, nats.errors.TimeoutError)


@dataclass
class Fleet:
    hub: EdgeHub
    alpha: EdgeRuntime
    beta: EdgeRuntime
    bundle_alpha: EdgeBundle

    @property
    def a(self) -> NatsClient:
        return self.alpha.nc


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with edge_hub(tmp_path) as hub:
        bundle_a = await hub.register("alpha")
        bundle_b = await hub.register("beta")
        sim_a, sim_b = SimExecutor(name="alpha"), SimExecutor(name="beta")
        alpha = await hub.start_edge(bundle_a, executor=sim_a)
        beta = await hub.start_edge(bundle_b, executor=sim_b)
        web = sample_taskset("web")
        await hub.write_desired(cluster_task("alpha", web))
        await hub.write_desired(cluster_task("beta", web))
        await eventually(lambda: "web" in sim_a.applied and "web" in sim_b.applied, "apply", 30)
        yield Fleet(hub, alpha, beta, bundle_a)


async def last_sequences(store: EventStore) -> dict[str, int]:
    return {
        name: int((await store.stream_info(name))["state"]["last_seq"])
        for name in (EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM)
    }


async def denied(nc: NatsClient, subject: str, body: object = None) -> bool:
    """True when the request gets no answer through the leaf (the permission drops it)."""
    payload = orjson.dumps(body) if body is not None else b""
    try:
        reply = await nc.request(subject, payload, timeout=1.5)
    except DENIED:
        return True
    raise AssertionError(f"{subject} answered {reply.data[:200]!r}")


async def test_a_clusters_credentials_cannot_write_the_log_or_anyones_desired_state(
    fleet: Fleet,
) -> None:
    own = orjson.loads(
        (await fleet.a.request("$JS.hub.API.CONSUMER.INFO.DESIRED.edge-alpha", b"", timeout=2)).data
    )
    assert own["name"] == "edge-alpha"
    before = await last_sequences(fleet.hub.store)
    forged = ClusterRegistered(
        id=new_event_id(), occurred_at=datetime.now(UTC), actor="cluster:alpha", cluster="evil"
    )
    writes = {
        "append to the log": ("fleet.evt.cluster.evil", encode_event(forged)),
        "write its own desired state": ("fleet.desired.alpha.web", b"{}"),
        "write another cluster's desired state": ("fleet.desired.beta.web", b"{}"),
        "write a desired state for a cluster that does not exist": ("fleet.desired.evil.x", b"{}"),
        "write a snapshot": ("fleet.snapshot.000000000001-evil.manifest", b"{}"),
        "write an archive segment": ("fleet.archive.segment.0000000001", b"forged"),
    }
    for what, (subject, payload) in writes.items():
        with pytest.raises(DENIED):
            await fleet.a.request(subject, payload, timeout=1.5, headers={"Nats-Msg-Id": what})
    assert await last_sequences(fleet.hub.store) == before


JS_ADMIN = [
    ("STREAM.INFO.EVENTS", None),
    ("STREAM.NAMES", {}),
    ("STREAM.LIST", {}),
    ("STREAM.PURGE.EVENTS", {}),
    ("STREAM.DELETE.EVENTS", None),
    ("STREAM.DELETE.DESIRED", None),
    ("STREAM.UPDATE.REPORTS", {"name": "REPORTS", "subjects": ["fleet.>"]}),
    ("STREAM.CREATE.STEAL", {"name": "STEAL", "subjects": ["fleet.>"]}),
    ("STREAM.MSG.GET.EVENTS", {"seq": 1}),
    ("DIRECT.GET.EVENTS", {"last_by_subj": "fleet.evt.cluster.beta"}),
    ("DIRECT.GET.REPORTS", {"seq": 1}),
    ("DIRECT.GET.SNAPSHOTS", {"last_by_subj": "fleet.snapshot.*.manifest"}),
    ("STREAM.PURGE.SNAPSHOTS", {}),
    ("DIRECT.GET.EVENTS_ARCHIVE", {"last_by_subj": "fleet.archive.segment.0000000001"}),
    ("STREAM.DELETE.EVENTS_ARCHIVE", None),
    ("CONSUMER.CREATE.EVENTS", {"stream_name": "EVENTS", "config": {"ack_policy": "none"}}),
    (
        "CONSUMER.CREATE.REPORTS.peek",
        {"stream_name": "REPORTS", "config": {"name": "peek", "ack_policy": "none"}},
    ),
    ("CONSUMER.DELETE.DESIRED.edge-beta", None),
    ("CONSUMER.DELETE.DESIRED.edge-alpha", None),
    ("STREAM.INFO.OBJ_CHARTS", None),
    ("DIRECT.GET.OBJ_CHARTS", {"last_by_subj": "$O.CHARTS.M.>"}),
    ("CONSUMER.CREATE.OBJ_CHARTS", {"stream_name": "OBJ_CHARTS", "config": {}}),
    ("ACCOUNT.INFO", None),
]


async def test_a_clusters_credentials_cannot_read_or_administer_the_hub_streams(
    fleet: Fleet,
) -> None:
    before = await last_sequences(fleet.hub.store)
    allowed = []
    for api, body in JS_ADMIN:
        try:
            await denied(fleet.a, f"$JS.hub.API.{api}", body)
        except AssertionError as answered:
            allowed.append(str(answered))
    assert not allowed, "\n".join(allowed)
    for system in ("$SYS.REQ.SERVER.PING", "$SYS.REQ.ACCOUNT.FLEET.CONNZ"):
        assert await denied(fleet.a, system)
    after = await fleet.hub.store.stream_info(EVENTS_STREAM)
    assert int(after["state"]["last_seq"]) == before[EVENTS_STREAM]
    names = orjson.loads(
        (await fleet.hub.store.nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)).data
    )
    assert "STEAL" not in names["streams"]
    assert {EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM} <= set(names["streams"])
    own = await fleet.a.request("$JS.hub.API.CONSUMER.INFO.DESIRED.edge-alpha", b"", timeout=2)
    assert orjson.loads(own.data)["name"] == "edge-alpha"
    record_figures("R6 cluster credentials on hub streams", denied=len(JS_ADMIN) + 2)


async def test_a_cluster_hears_nothing_of_the_hubs_own_traffic(fleet: Fleet) -> None:
    heard: list[str] = []

    async def collect(msg: Msg) -> None:
        heard.append(msg.subject)

    subscriptions = [
        await fleet.a.subscribe(subject, cb=collect)
        for subject in ("fleet.>", "$JS.hub.>", "$KV.>", "$O.>", "_INBOX.>")
    ]
    try:
        await fleet.a.flush()
        hub = fleet.hub.store
        marker = new_event_id()
        await hub.append(
            [
                ClusterRegistered(
                    id=new_event_id(), occurred_at=datetime.now(UTC), actor="t", cluster=marker[:8]
                )
            ]
        )
        await hub.nc.publish("fleet.inventory.beta", b"beta's digest")
        await hub.nc.publish(f"fleet.evt.cluster.{marker[:8]}", b"loose")
        await fleet.hub.write_desired(cluster_task("beta", sample_taskset("db")))
        await hub.nc.flush()
        # alpha's own traffic keeps flowing meanwhile: a probe that must arrive proves the
        # subscriptions work, and that everything of the hub's sent before it would have too.
        await fleet.hub.write_desired(cluster_task("alpha", sample_taskset("probe")))
        await eventually(
            lambda: (
                any("alpha" in subject or "edge-alpha" in subject for subject in heard)
                or "probe" in str(heard)
            ),
            "alpha's own traffic on its leaf",
            20,
        )
        leaked = [
            subject
            for subject in heard
            if "beta" in subject or subject.startswith("fleet.evt") or marker[:8] in subject
        ]
        assert not leaked, leaked
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()


async def test_cluster_material_is_no_api_credential(fleet: Fleet, tmp_path: Path) -> None:
    bundle = fleet.bundle_alpha
    cert_body = b"".join(bundle.cert_file.read_bytes().splitlines()[1:-1]).decode()
    key_body = b"".join(bundle.key_file.read_bytes().splitlines()[1:-1]).decode()
    candidates = {
        "certificate": cert_body,
        "private key": key_body,
        "CA certificate": b"".join(bundle.ca_file.read_bytes().splitlines()[1:-1]).decode(),
        "cluster name": "alpha",
        "certificate as a token": f"fbt_{cert_body[:12]}_{key_body[:43]}",
        "basic auth with the key": base64.b64encode(f"alpha:{key_body}".encode()).decode(),
    }
    async with live_api(fleet.hub.store, tmp_path / "api") as api:
        app = create_app(HubContext.for_store(fleet.hub.store, tmp_path / "routes"))
        routes = [
            (method, route["path"])
            for route in describe_routes(app)
            if not route["public"] and not route["path"].startswith(OPENAPI_PATH)
            for method in route["methods"]
            if method not in ("HEAD", "OPTIONS")
        ]
        assert routes, "the app has no protected routes"
        let_in = []
        async with api.client() as client:
            for what, credential in candidates.items():
                scheme = "Basic" if what.startswith("basic") else "Bearer"
                for method, path in routes:
                    concrete = path.replace("{name:str}", "alpha").replace("{token:str}", "x")
                    response = await client.request(
                        method, concrete, headers={"Authorization": f"{scheme} {credential}"}
                    )
                    if response.status_code != 401:
                        let_in.append(f"{what}: {method} {path} -> {response.status_code}")
        async with api.client(Role.viewer) as viewer:
            assert (await viewer.get("/api/v1/whoami")).status_code == 200
    assert not let_in, "\n".join(let_in)
    record_figures(
        "R6 cluster material on the API", routes=len(routes), credentials=len(candidates)
    )


async def nats_login(url: str, credentials: dict[str, str]) -> str:
    """The server's answer to a CONNECT with `credentials`, spoken in the NATS protocol itself:
    `+OK`/`PONG` for a login, `-ERR ...` for a refusal."""
    host, _, port = url.removeprefix("nats://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        info = await asyncio.wait_for(reader.readline(), 30)
        assert info.startswith(b"INFO "), info
        connect = {"verbose": True, "pedantic": False, "protocol": 1, **credentials}
        writer.write(b"CONNECT " + orjson.dumps(connect) + b"\r\nPING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 30)).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_api_tokens_are_no_nats_credentials(fleet: Fleet, tmp_path: Path) -> None:
    async with live_api(fleet.hub.store, tmp_path / "api") as api:
        tokens = dict(api.tokens)
    url = fleet.hub.server.client_url
    # The server is there and takes a real login: the hub's own credentials (a user JWT).
    hub_login = await nats.connect(url, user_credentials=str(fleet.hub.credentials))
    await hub_login.close()
    let_in = []
    for role, token in tokens.items():
        for credentials in (
            {"user": "hub", "pass": token},
            {"user": role.value, "pass": token},
            {"user": "admin", "pass": token},
            {"auth_token": token},
        ):
            answer = await nats_login(url, credentials)
            if "Authorization Violation" not in answer:
                let_in.append(f"{role.value} token as {sorted(credentials)}: {answer}")
    assert not let_in, "\n".join(let_in)


async def test_a_report_written_in_another_clusters_name_does_not_change_that_clusters_status(
    fleet: Fleet, tmp_path: Path
) -> None:
    hub = fleet.hub
    projector = await start_projector([hub.server.client_url], hub.credentials, tmp_path / "p.db")
    try:
        forged = TaskFailed(
            id=new_event_id(),
            occurred_at=datetime.now(UTC),
            actor="cluster:beta",
            cluster="beta",
            taskset="web",
            taskset_version=1,
            generation=1,
            reason="forged by alpha",
        )
        # Alpha writes into its own outbox on its own subject; only the payload lies.
        await fleet.a.request(
            "fleet.report.alpha.web", encode_event(forged), headers={"Nats-Msg-Id": forged.id}
        )

        async def arrived() -> bool:
            return any(event.id == forged.id for _, event, _ in await hub.reports())

        await eventually(arrived, "the forged report sourced into REPORTS", 60, 0.2)
        # beta's own report of applying web must be in REPORTS and projected (the control).
        await eventually(
            lambda: beta_reported_web(hub), "beta's own TaskApplied in REPORTS", 60, 0.2
        )
        last = int((await hub.store.stream_info(REPORTS_STREAM))["state"]["last_seq"])
        await eventually(
            lambda: projector.caught_up(last, REPORTS_STREAM), "the projector reading it", 30
        )
        row = await beta_web_status(projector.path)
        assert row is not None, "beta's own report of applying web was not projected"
        assert row["last_outcome"] == "applied", "beta's genuine report is not the last word"
        assert "forged by alpha" not in str(row["failed_reason"] or ""), dict(row)
    finally:
        await projector.stop()


async def beta_reported_web(hub: EdgeHub) -> bool:
    return any(
        origin == "beta" and isinstance(event, TaskApplied) and event.taskset == "web"
        for origin, event, _ in await hub.reports()
    )


async def beta_web_status(path: Path) -> dict[str, object] | None:
    db = await ProjectionDb.open_readonly(path)
    try:
        return await db.fetch_one(
            "SELECT failed_reason, last_outcome FROM cluster_status "
            "WHERE cluster = 'beta' AND taskset = 'web'"
        )
    finally:
        await db.close()
