"""Cluster isolation: what one cluster's credentials can and cannot do on the hub.

Every case runs against a real hub nats-server and real leaf nats-servers on loopback. "Cluster
A's credentials" means a client of A's leaf, whose link to the hub is A's certificate: every
request it makes into the hub is checked against A's permissions. Each denial is paired with
the same request for A's own resources succeeding, so a test cannot pass because nothing works.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from access.nats_accounts import FLEET_ACCOUNT, credentials_jwt
from access.nats_jwt import decode
from access.pki import (
    CertificateAuthority,
    cluster_of_certificate,
    identity_of_certificate,
    public_key_fingerprint,
)
from events.catalog import TaskApplied
from events.codec import encode_event
from events.inventory import InventoryDigest, encode_inventory
from fleetbus.bundle import leaf_config
from fleetbus.edge import EdgeRuntime
from fleetbus.edgehub import hub_pki
from fleetbus.natsserver import NatsServer, free_port
from sealing.envelope import HUB_SCOPE, cluster_scope, seal_bytes
from simulator.executor import SimExecutor
from taskset.codec import encode_cluster_task
from taskset.model import Step
from tests.eventually import eventually
from tests.integration.edge_harness import (
    EdgeHub,
    cluster_task,
    edge_hub,
    leaf_connections,
    leaf_names,
    log_mentions,
    sample_taskset,
    start_raw_leaf,
)

DENIED = (nats.errors.NoRespondersError, nats.errors.TimeoutError)


def leaf_ids(server: NatsServer, name: str) -> list[int]:
    return [int(leaf["id"]) for leaf in leaf_connections(server) if leaf.get("name") == name]


@dataclass
class TwoClusters:
    hub: EdgeHub
    alpha: EdgeRuntime
    beta: EdgeRuntime
    sim_alpha: SimExecutor
    sim_beta: SimExecutor

    @property
    def a(self) -> NatsClient:
        """A client on alpha's leaf: everything it sends to the hub travels as alpha."""
        return self.alpha.nc


@pytest.fixture
async def clusters(tmp_path: Path) -> AsyncIterator[TwoClusters]:
    async with edge_hub(tmp_path) as hub:
        bundle_a = await hub.register("alpha")
        bundle_b = await hub.register("beta")
        sim_a, sim_b = SimExecutor(name="alpha"), SimExecutor(name="beta")
        alpha = await hub.start_edge(bundle_a, executor=sim_a)
        beta = await hub.start_edge(bundle_b, executor=sim_b)
        web = sample_taskset("web")
        await hub.write_desired(cluster_task("alpha", web))
        await hub.write_desired(cluster_task("beta", web))
        await eventually(lambda: "web" in sim_a.applied and "web" in sim_b.applied, what="apply")
        yield TwoClusters(hub, alpha, beta, sim_a, sim_b)


async def request(nc: NatsClient, subject: str, body: object = None) -> bytes:
    payload = orjson.dumps(body) if body is not None else b""
    reply = await nc.request(subject, payload, timeout=1.5)
    return reply.data


async def test_a_cluster_leaf_joins_fleet_as_the_user_of_its_certificate(tmp_path: Path) -> None:
    async with edge_hub(tmp_path) as hub:
        issued = hub.issue("alpha")
        identity = identity_of_certificate(issued.cert_pem)
        assert identity == f"alpha.{issued.fingerprint[:16]}"
        assert cluster_of_certificate(issued.cert_pem) == "alpha"
        config_before = hub.data.nats_conf.read_text()
        bundle = await hub.register("alpha")
        await hub.start_edge(bundle)
        await eventually(lambda: "edge-alpha" in leaf_names(hub.server), what="alpha's leaf")
        authority = hub.data.nats_authority()
        [leaf] = [x for x in leaf_connections(hub.server) if x.get("name") == "edge-alpha"]
        assert leaf["account"] == authority.public_key(FLEET_ACCOUNT)
        # The bundle's user is the one derived from the certificate on record, named by it.
        claims = decode(credentials_jwt(bundle.creds_file.read_text()))
        fingerprint = public_key_fingerprint(bundle.cert_file.read_bytes())
        assert claims["name"] == identity_of_certificate(bundle.cert_file.read_bytes())
        assert claims["sub"] == authority.cluster_user_key("alpha", fingerprint).public
        # Registering changed no server config: users live in JWTs, not in nats.conf.
        assert hub.data.nats_conf.read_text() == config_before


async def test_cluster_a_cannot_pull_cluster_b_durable_consumer(clusters: TwoClusters) -> None:
    own = await request(clusters.a, "$JS.hub.API.CONSUMER.INFO.DESIRED.edge-alpha")
    assert orjson.loads(own)["name"] == "edge-alpha"
    with pytest.raises(DENIED):
        await request(
            clusters.a,
            "$JS.hub.API.CONSUMER.MSG.NEXT.DESIRED.edge-beta",
            {"batch": 1, "expires": 1_000_000_000},
        )
    with pytest.raises(DENIED):
        await request(clusters.a, "$JS.hub.API.CONSUMER.INFO.DESIRED.edge-beta")


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.hub.API.CONSUMER.CREATE.DESIRED.peek.fleet.desired.beta.>",
        "$JS.hub.API.CONSUMER.CREATE.DESIRED.peek.fleet.desired.alpha.>",
        "$JS.hub.API.CONSUMER.CREATE.DESIRED.peek",
        "$JS.hub.API.CONSUMER.DURABLE.CREATE.DESIRED.peek",
    ],
    ids=["beta-filter", "own-filter", "no-filter", "legacy-durable"],
)
async def test_cluster_a_cannot_create_a_consumer_through_the_hub_jetstream_api(
    clusters: TwoClusters, subject: str
) -> None:
    config = {"name": "peek", "filter_subject": "fleet.desired.alpha.>", "ack_policy": "none"}
    with pytest.raises(DENIED):
        await request(clusters.a, subject, {"stream_name": "DESIRED", "config": config})


GATE = "fleet.jsapi.alpha"
OWN_FILTER = "fleet.desired.alpha.>"


def mirror_request(name: str, **changes: object) -> dict[str, object]:
    """A create request shaped exactly like the one alpha's mirror sends, with `changes`."""
    config: dict[str, object] = {
        "name": name,
        "deliver_policy": "all",
        "ack_policy": "none",
        "max_deliver": 1,
        "filter_subject": OWN_FILTER,
        "flow_control": True,
        "deliver_subject": f"fleet.sync.desired.alpha.M.{name}",
        "idle_heartbeat": 1_000_000_000,
        "inactive_threshold": 10_000_000_000,
        "direct": True,
        "sourcing": True,
        "metadata": {
            "_nats.mirror.acc": "FLEET",
            "_nats.mirror.domain": "edge-alpha",
            "_nats.mirror.stream": "DESIRED-alpha",
        },
    }
    config.update(changes)
    return {"stream_name": "DESIRED", "config": config, "action": ""}


REFUSED_BY_THE_GATE = [
    pytest.param(
        "CONSUMER.CREATE.DESIRED.JS_MIRROR_x1.fleet.desired.alpha.>",
        mirror_request("JS_MIRROR_x1", deliver_subject="loot.alpha"),
        "push delivery must go to the cluster's own prefix",
        id="push-to-a-foreign-subject",
    ),
    pytest.param(
        "CONSUMER.CREATE.DESIRED.JS_MIRROR_x2.fleet.desired.alpha.>",
        mirror_request("JS_MIRROR_x2", durable_name="JS_MIRROR_x2"),
        "durable consumers are refused",
        id="durable",
    ),
    pytest.param(
        "CONSUMER.CREATE.DESIRED.JS_MIRROR_x3.fleet.desired.alpha.>",
        mirror_request("JS_MIRROR_x3", deliver_subject=None, flow_control=False),
        "push delivery must go to the cluster's own prefix",
        id="pull",
    ),
    pytest.param(
        "CONSUMER.CREATE.DESIRED.mine.fleet.desired.alpha.>",
        mirror_request("mine"),
        "is not a mirror's",
        id="named-freely",
    ),
    pytest.param(
        "CONSUMER.CREATE.DESIRED.JS_MIRROR_x4.fleet.desired.beta.>",
        mirror_request("JS_MIRROR_x4", filter_subject="fleet.desired.beta.>"),
        "the filter must be 'fleet.desired.alpha.>'",
        id="beta-filter",
    ),
    pytest.param(
        "CONSUMER.CREATE.DESIRED.JS_MIRROR_x5.fleet.desired.alpha.>",
        mirror_request("JS_MIRROR_x5", inactive_threshold=0),
        "inactive_threshold must be set and at most 60 s",
        id="never-expires",
    ),
    pytest.param(
        "CONSUMER.CREATE.DESIRED.JS_MIRROR_x6.fleet.desired.alpha.>",
        {**mirror_request("JS_MIRROR_x6"), "action": "update"},
        "consumers are created, never updated",
        id="update",
    ),
    pytest.param(
        "CONSUMER.CREATE.EVENTS.JS_MIRROR_x7.fleet.desired.alpha.>",
        mirror_request("JS_MIRROR_x7"),
        "only be created on DESIRED",
        id="another-stream",
    ),
    pytest.param(
        "CONSUMER.DELETE.DESIRED.edge-beta", None, "may be deleted", id="delete-beta-durable"
    ),
    pytest.param("STREAM.INFO.DESIRED", None, "not an operation an edge may ask", id="stream-info"),
]


@pytest.mark.parametrize(("api", "body", "rule"), REFUSED_BY_THE_GATE)
async def test_the_consumer_gate_refuses_every_consumer_but_a_mirror_of_the_cluster_own_slice(
    clusters: TwoClusters, api: str, body: object, rule: str
) -> None:
    answer = orjson.loads(await request(clusters.a, f"{GATE}.{api}", body))
    assert answer["error"]["code"] == 403, answer
    assert rule in answer["error"]["description"], answer
    gate = clusters.hub.services.consumer_gate
    assert all(not name.startswith("JS_MIRROR_x") for name in gate.created.get("alpha", set()))


async def test_cluster_a_cannot_ask_the_gate_in_cluster_b_name(clusters: TwoClusters) -> None:
    with pytest.raises(DENIED):
        await request(
            clusters.a,
            "fleet.jsapi.beta.CONSUMER.CREATE.DESIRED.JS_MIRROR_b1.fleet.desired.beta.>",
            mirror_request("JS_MIRROR_b1"),
        )


async def hub_client(hub: EdgeHub) -> NatsClient:
    return await nats.connect(hub.server.client_url, user_credentials=str(hub.credentials))


async def consumer_exists(nc: NatsClient, name: str) -> bool:
    reply = await nc.request(f"$JS.API.CONSUMER.INFO.DESIRED.{name}", b"", timeout=2)
    return "error" not in orjson.loads(reply.data)


async def test_a_cluster_gets_a_mirror_consumer_up_to_its_limit_and_none_after_removal(
    clusters: TwoClusters,
) -> None:
    gate = clusters.hub.services.consumer_gate
    await eventually(lambda: len(gate.created.get("alpha", ())) == 1, what="alpha's mirror")
    (mirror,) = gate.created["alpha"]
    api = "CONSUMER.CREATE.DESIRED.JS_MIRROR_extra.fleet.desired.alpha.>"
    created = orjson.loads(
        await request(clusters.a, f"{GATE}.{api}", mirror_request("JS_MIRROR_extra"))
    )
    extra = created["name"]
    assert extra.startswith("JS_MIRROR_extra"), created
    over = "CONSUMER.CREATE.DESIRED.JS_MIRROR_over.fleet.desired.alpha.>"
    refused = orjson.loads(
        await request(clusters.a, f"{GATE}.{over}", mirror_request("JS_MIRROR_over"))
    )
    assert "already has 2 live consumers (limit 2)" in refused["error"]["description"]
    hub = await hub_client(clusters.hub)
    try:
        assert await consumer_exists(hub, mirror)
        assert await consumer_exists(hub, extra)
        await clusters.hub.deregister("alpha")
        assert not await consumer_exists(hub, mirror)
        assert not await consumer_exists(hub, extra)
        assert not await consumer_exists(hub, "edge-alpha")
        assert await consumer_exists(hub, "edge-beta")
    finally:
        await hub.close()
    with pytest.raises((*DENIED, nats.errors.ConnectionClosedError)):
        await request(clusters.a, f"{GATE}.{api}", mirror_request("JS_MIRROR_late"))


async def test_cluster_a_cannot_direct_get_cluster_b_desired_state(clusters: TwoClusters) -> None:
    own = await clusters.a.request(
        "$JS.hub.API.DIRECT.GET.DESIRED.fleet.desired.alpha.web", b"", timeout=1.5
    )
    assert (own.headers or {}).get("Nats-Subject") == "fleet.desired.alpha.web"
    with pytest.raises(DENIED):
        await request(clusters.a, "$JS.hub.API.DIRECT.GET.DESIRED.fleet.desired.beta.web")
    with pytest.raises(DENIED):
        await request(
            clusters.a,
            "$JS.hub.API.DIRECT.GET.DESIRED",
            {"multi_last": ["fleet.desired.beta.>"], "batch": 10},
        )


async def test_an_edge_opens_desired_state_sealed_with_its_own_key_fetched_over_its_link(
    clusters: TwoClusters, caplog: pytest.LogCaptureFixture
) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "a"}}
    taskset = sample_taskset("vault")
    taskset = msgspec.structs.replace(
        taskset, install=[*taskset.install, Step(object={**secret, "stringData": {"pw": "x1"}})]
    )
    await clusters.hub.write_desired(cluster_task("alpha", taskset), sealed=True)
    await eventually(lambda: "vault" in clusters.sim_alpha.applied, what="sealed task applied")

    keys = clusters.hub.services.key_service.keys
    caplog.set_level(logging.ERROR, logger="edge_connector.jetstream")

    async def put(name: str, payload: bytes) -> None:
        subject = f"fleet.desired.alpha.{name}"
        reply = await clusters.hub.store.nc.request(
            subject, payload, timeout=5, headers={"Nats-Msg-Id": f"alpha.{name}.1"}
        )
        assert "seq" in orjson.loads(reply.data)

    # Sealed with beta's key on alpha's subject: alpha's edge is refused beta's key.
    for_beta = encode_cluster_task(cluster_task("alpha", sample_taskset("foreign")))
    await put("foreign", seal_bytes(keys, cluster_scope("beta"), for_beta, b"x"))
    # Sealed for alpha, then one bit flipped: it does not open.
    broken = bytearray(
        seal_bytes(
            keys,
            cluster_scope("alpha"),
            encode_cluster_task(cluster_task("alpha", sample_taskset("broken"))),
            b"fleet.desired.alpha.broken",
        )
    )
    broken[-5] ^= 1
    await put("broken", bytes(broken))
    await eventually(
        lambda: (
            "does not open: it was altered" in caplog.text
            and "is not a key of cluster alpha" in caplog.text
        ),
        what="both refusals logged by the edge",
    )
    assert "foreign" not in clusters.sim_alpha.applied
    assert "broken" not in clusters.sim_alpha.applied
    assert "cluster:beta/" in caplog.text


async def test_cluster_a_cannot_get_cluster_b_data_keys(clusters: TwoClusters) -> None:
    keys = clusters.hub.services.key_service.keys
    alpha_key, _ = keys.active_key(cluster_scope("alpha"))
    beta_key, _ = keys.active_key(cluster_scope("beta"))
    hub_key, _ = keys.active_key(HUB_SCOPE)
    own = orjson.loads(
        (await clusters.a.request("fleet.keys.alpha", alpha_key.encode(), timeout=2)).data
    )
    assert own["id"] == alpha_key
    assert base64.b64decode(own["key"]) == keys.key(alpha_key)
    with pytest.raises(DENIED):
        await clusters.a.request("fleet.keys.beta", beta_key.encode(), timeout=1.5)
    for wanted, reason in ((beta_key, "not a key of cluster alpha"), (hub_key, "not a key")):
        answer = orjson.loads(
            (await clusters.a.request("fleet.keys.alpha", wanted.encode(), timeout=2)).data
        )
        assert "key" not in answer
        assert reason in answer["error"]


async def test_cluster_a_cannot_publish_cluster_b_inventory(clusters: TwoClusters) -> None:
    hub_nc = clusters.hub.store.nc
    received: list[str] = []

    async def collect(msg: Msg) -> None:
        received.append(msg.subject)

    sub = await hub_nc.subscribe("fleet.inventory.*", cb=collect)
    try:
        await hub_nc.flush()
        forged = InventoryDigest(cluster="beta", sent_at=datetime.now(UTC))
        own = InventoryDigest(cluster="alpha", sent_at=datetime.now(UTC))
        marker = len(received)
        await clusters.a.publish("fleet.inventory.beta", encode_inventory(forged))
        await clusters.a.publish("fleet.inventory.alpha", encode_inventory(own))
        await clusters.a.flush()
        await eventually(lambda: "fleet.inventory.alpha" in received[marker:], what="own digest")
        # One connection, one path: alpha's own digest arrived after the forged one would have.
        assert "fleet.inventory.beta" not in received[marker:]
    finally:
        await sub.unsubscribe()


async def test_a_report_filed_under_another_cluster_is_dropped_or_attributed_to_its_writer(
    clusters: TwoClusters,
) -> None:
    # A compromised edge controls its own nats-server: it widens its outbox to every report
    # subject and writes reports in beta's name, in the subject and in the payload.
    wide = {
        "name": "REPORTS-alpha",
        "subjects": ["fleet.report.>"],
        "storage": "file",
        "duplicate_window": 600_000_000_000,
    }
    answer = orjson.loads(await request(clusters.a, "$JS.API.STREAM.UPDATE.REPORTS-alpha", wide))
    assert "error" not in answer, answer
    forged = TaskApplied(
        id="0190f5c0-0000-7000-8000-00000000f0f1",
        occurred_at=datetime.now(UTC),
        actor="cluster:beta",
        cluster="beta",
        taskset="web",
        generation=99,
    )
    by_subject = forged
    by_payload = TaskApplied(
        id="0190f5c0-0000-7000-8000-00000000f0f2",
        occurred_at=datetime.now(UTC),
        actor="cluster:beta",
        cluster="beta",
        taskset="db",
        generation=98,
    )
    await clusters.a.request(
        "fleet.report.beta.web", encode_event(by_subject), headers={"Nats-Msg-Id": by_subject.id}
    )
    await clusters.a.request(
        "fleet.report.alpha.db", encode_event(by_payload), headers={"Nats-Msg-Id": by_payload.id}
    )

    async def payload_forgery_arrived() -> bool:
        return any(event.id == by_payload.id for _, event, _ in await clusters.hub.reports())

    await eventually(payload_forgery_arrived, what="alpha's outbox to be sourced")
    reports = await clusters.hub.reports()
    forged_ids = {by_subject.id, by_payload.id}
    assert not [
        event for origin, event, _ in reports if origin == "beta" and event.id in forged_ids
    ]
    assert [origin for origin, event, _ in reports if event.id == by_payload.id] == ["alpha"]
    assert not [event for _, event, _ in reports if event.id == by_subject.id]


async def test_a_leaf_without_a_certificate_is_refused(tmp_path: Path) -> None:
    async with edge_hub(tmp_path) as hub:
        await hub.register("alpha")
        ca = hub_pki(hub.data).ca_cert
        leaf = await asyncio.to_thread(
            start_raw_leaf, tmp_path / "nocert", "edge-nocert", hub.leaf_url, f'ca_file: "{ca}"'
        )
        try:
            await eventually(
                lambda: log_mentions(hub.server, "client didn't provide a certificate"),
                what="the hub to refuse the handshake",
            )
            assert "edge-nocert" not in leaf_names(hub.server)
        finally:
            leaf.stop()


async def test_a_leaf_with_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    async with edge_hub(tmp_path) as hub:
        await hub.register("alpha")
        other = CertificateAuthority.create(datetime.now(UTC), name="someone else")
        issued = other.issue_cluster("alpha", datetime.now(UTC))
        root = tmp_path / "foreign"
        root.mkdir()
        (root / "c.crt").write_bytes(issued.cert_pem)
        (root / "c.key").write_bytes(issued.key_pem)
        ca = hub_pki(hub.data).ca_cert
        tls = f'cert_file: "{root / "c.crt"}", key_file: "{root / "c.key"}", ca_file: "{ca}"'
        leaf = await asyncio.to_thread(start_raw_leaf, root, "edge-foreign", hub.leaf_url, tls)
        try:
            # Go's TLS client offers a certificate only if it chains to a CA the server
            # asks for; either way the handshake fails and no leaf connects.
            await eventually(
                lambda: log_mentions(hub.server, "TLS leafnode handshake error"),
                what="the hub to refuse the foreign certificate",
            )
            assert "edge-foreign" not in leaf_names(hub.server)
        finally:
            leaf.stop()


async def test_deregistering_a_cluster_drops_its_leaf_and_refuses_its_certificate(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("gamma")
        edge = await hub.start_edge(bundle)
        assert edge.server is not None
        await eventually(lambda: "edge-gamma" in leaf_names(hub.server), what="gamma's leaf")
        await hub.deregister("gamma")
        await eventually(
            lambda: "edge-gamma" not in leaf_names(hub.server), what="the leaf to be dropped"
        )
        await eventually(
            lambda: log_mentions(hub.server, "Authorization Violation", "authentication error"),
            what="the revoked certificate to be refused on reconnect",
        )
        assert "edge-gamma" not in leaf_names(hub.server)


async def test_re_registering_a_cluster_revokes_its_previous_certificate(tmp_path: Path) -> None:
    async with edge_hub(tmp_path) as hub:
        old = await hub.register("delta")
        old_cert = old.cert_file.read_bytes()
        edge = await hub.start_edge(old)
        await eventually(lambda: "edge-delta" in leaf_names(hub.server), what="delta's leaf")
        await hub.register("delta")  # a new certificate for the same cluster
        await eventually(
            lambda: "edge-delta" not in leaf_names(hub.server),
            what="the old certificate's leaf to be dropped",
        )
        assert identity_of_certificate(old_cert) not in hub.data.nats_conf.read_text()
        assert edge.server is not None


async def websocket_connect_as_client(port: int, context: ssl.SSLContext) -> str:
    """Open a NATS WebSocket *client* connection (not a leaf) and return the server's answer
    to CONNECT: a minimal RFC 6455 client, enough for one exchange."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        status = await reader.readuntil(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status
        answer = b""
        payload = b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n'
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x82, 0x80 | len(payload)]) + mask + masked)
        await writer.drain()
        async with asyncio.timeout(30):
            while b"-ERR" not in answer and b"PONG" not in answer:
                header = await reader.readexactly(2)
                length = header[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(await reader.readexactly(2), "big")
                elif length == 127:
                    length = int.from_bytes(await reader.readexactly(8), "big")
                answer += await reader.readexactly(length)
        return answer.decode(errors="replace")
    finally:
        writer.close()


async def test_a_cluster_certificate_cannot_log_in_as_a_plain_client(tmp_path: Path) -> None:
    async with edge_hub(tmp_path, ws=True) as hub:
        assert hub.ws_port is not None
        bundle = await hub.register("alpha")
        context = ssl.create_default_context(cafile=str(bundle.ca_file))
        context.load_cert_chain(str(bundle.cert_file), str(bundle.key_file))
        answer = await websocket_connect_as_client(hub.ws_port, context)
        assert answer.startswith("INFO ")
        assert "-ERR 'Authorization Violation'" in answer
        assert "PONG" not in answer


async def test_a_revoked_edge_that_claims_another_clusters_name_is_dropped_too(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        honest = await hub.start_edge(await hub.register("gamma"))
        await hub.register("beta")  # registered, its edge offline
        alpha = await hub.register("alpha")
        # alpha's certificate, but its leaf calls itself edge-beta.
        root = tmp_path / "impostor"
        root.mkdir()
        config = leaf_config(
            alpha.settings,
            port=free_port(),
            monitor_port=free_port(),
            store_dir=root / "js",
            connector_password="x",
            ca_file=alpha.ca_file,
            cert_file=alpha.cert_file,
            key_file=alpha.key_file,
            creds_file=alpha.creds_file,
        ).replace('server_name: "edge-alpha"', 'server_name: "edge-beta"')
        (root / "leaf.conf").write_text(config)
        monitor = int(config.split('http: "127.0.0.1:')[1].split('"')[0])
        impostor = NatsServer(
            config_path=root / "leaf.conf",
            client_url="nats://unused",
            monitor_port=monitor,
            log_path=root / "nats.log",
        )
        await asyncio.to_thread(impostor.start)
        try:
            await eventually(
                lambda: {"edge-beta", "edge-gamma"} <= leaf_names(hub.server),
                what="the impostor and the honest edge connected",
            )
            gamma_before = leaf_ids(hub.server, "edge-gamma")
            await hub.deregister("alpha")
            await eventually(
                lambda: "edge-beta" not in leaf_names(hub.server), what="the impostor dropped"
            )
            assert honest.server is not None
            # The honest edge proved who it is and kept its connection.
            assert leaf_ids(hub.server, "edge-gamma") == gamma_before
        finally:
            await asyncio.to_thread(impostor.stop)
