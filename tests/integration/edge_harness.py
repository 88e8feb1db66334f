"""A hub with its edge-facing services and real edges, all on loopback, for the edge tests.

The hub is a real nats-server with the TLS leafnode listener (on a free port, never 443) and
the real access, provisioning and anti-entropy services; each edge is a real leaf nats-server
child process with the real connector in front of an in-memory simulated cluster.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from access.permissions import leaf_credentials
from access.pki import IssuedCertificate
from events import edges
from events.catalog import ClusterDeregistered, ClusterRegistered, Event
from events.codec import EventDecoder
from events.ids import new_event_id
from events.store import EventStore
from events.streams import REPORTS_STREAM, hub_streams
from fleetbus.bundle import EdgeBundle, EdgeSettings, read_edge_bundle, write_edge_bundle
from fleetbus.datadir import DataDir
from fleetbus.edge import EdgeRuntime, EdgeState
from fleetbus.edgehub import EdgeServices, hub_pki, prepare_listener
from fleetbus.hub import connect_hub_store, start_hub_nats
from fleetbus.natsserver import NatsServer, free_port
from sealing.envelope import cluster_scope, seal_bytes
from simulator.executor import SimExecutor
from taskset.codec import encode_cluster_task
from taskset.digest import digest_of
from taskset.model import ClusterTask, Step, Taskset


def sample_taskset(name: str, *, replicas: int = 1, drift_policy: str = "correct") -> Taskset:
    def cm(n: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": n, "namespace": "apps"},
        }

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {"replicas": replicas},
    }
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{name}-migrate"}}
    return Taskset(
        name=name,
        namespace="apps",
        init=[Step(object={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}})],
        install=[Step(object=cm(f"{name}-config")), Step(object=deployment)],
        post_install=[Step(object=cm(f"{name}-done"), job=job, wait="complete")],
        pre_delete=[Step(object=cm(f"{name}-goodbye"))],
        drift_policy=drift_policy,  # type: ignore[arg-type]
    )


def cluster_task(
    cluster: str, taskset: Taskset, *, generation: int = 1, removed: bool = False
) -> ClusterTask:
    return ClusterTask(
        cluster=cluster,
        taskset_name=taskset.name,
        version=generation,
        generation=generation,
        digest=digest_of(taskset),
        taskset=taskset,
        removed=removed,
    )


@dataclass
class EdgeHub:
    """A running hub with its edge services, and helpers to drive it."""

    root: Path
    data: DataDir
    server: NatsServer
    store: EventStore
    services: EdgeServices
    leaf_port: int
    ws_port: int | None
    edges: list[EdgeRuntime] = field(default_factory=list)

    @property
    def credentials(self) -> Path:
        """The `.creds` of the hub's own user (FLEET account)."""
        return self.data.hub_credentials

    @property
    def leaf_url(self) -> str:
        return f"tls://127.0.0.1:{self.leaf_port}"

    def issue(self, cluster: str) -> IssuedCertificate:
        return hub_pki(self.data).load_ca().issue_cluster(cluster, datetime.now(UTC))

    async def append(self, event: Event) -> int:
        result = await self.store.append([event])
        return result.sequences[-1]

    async def register(
        self,
        cluster: str,
        *,
        labels: dict[str, str] | None = None,
        inventory_interval: float = 0.3,
        desired_source: str = "mirror",
    ) -> EdgeBundle:
        """Issue a certificate, write the bundle, register, wait until effective."""
        issued = self.issue(cluster)
        ca_pem = hub_pki(self.data).ca_cert.read_bytes()
        settings = EdgeSettings(
            cluster=cluster,
            hub_urls=[self.leaf_url],
            inventory_interval=inventory_interval,
            desired_source=desired_source,
        )
        out = write_edge_bundle(
            self.root / "bundles" / cluster,
            settings,
            ca_pem=ca_pem,
            issued=issued,
            credentials=leaf_credentials(
                self.data.nats_authority(),
                cluster,
                issued.fingerprint,
                expires=issued.certificate.not_valid_after_utc,
            ),
        )
        seq = await self.append(
            ClusterRegistered(
                id=new_event_id(),
                occurred_at=datetime.now(UTC),
                actor="test",
                cluster=cluster,
                labels=labels or {},
                certificate_fingerprint=issued.fingerprint,
            )
        )
        await self.wait_effective(seq)
        return read_edge_bundle(out)

    async def deregister(self, cluster: str) -> None:
        seq = await self.append(
            ClusterDeregistered(
                id=new_event_id(), occurred_at=datetime.now(UTC), actor="test", cluster=cluster
            )
        )
        await self.wait_effective(seq)

    async def wait_effective(self, seq: int) -> None:
        async with asyncio.timeout(60):
            await self.services.access.wait_applied(seq)
            await self.services.provisioning.wait_applied(seq)

    async def start_edge(
        self, bundle: EdgeBundle, *, state: Path | None = None, executor: SimExecutor | None = None
    ) -> EdgeRuntime:
        runtime = await EdgeRuntime.leaf(
            bundle,
            EdgeState(state or self.root / "edges" / bundle.cluster),
            executor or SimExecutor(name=bundle.cluster),
        )
        self.edges.append(runtime)
        return runtime

    async def stop_edge(self, runtime: EdgeRuntime) -> None:
        await runtime.stop()
        self.edges.remove(runtime)

    async def write_desired(self, task: ClusterTask, *, sealed: bool = False) -> int:
        """Write a ClusterTask to DESIRED the way the scheduler does (`sealed`: with the
        cluster's data key from the hub's keyring, as a hub with a keyring does)."""
        subject = f"fleet.desired.{task.cluster}.{task.taskset_name}"
        payload = encode_cluster_task(task)
        if sealed:
            keys = self.services.key_service.keys
            payload = seal_bytes(keys, cluster_scope(task.cluster), payload, subject.encode())
        reply = await self.store.nc.request(
            subject,
            payload,
            timeout=5,
            headers={
                "Nats-Msg-Id": f"{task.cluster}.{task.taskset_name}.{task.generation}",
                "Fleetbus-Generation": str(task.generation),
                "Fleetbus-Version": str(task.version),
                "Fleetbus-Digest": task.digest,
                "Fleetbus-Removed": "true" if task.removed else "false",
            },
        )
        ack = orjson.loads(reply.data)
        assert "seq" in ack, ack
        return int(ack["seq"])

    async def reports(self) -> list[tuple[str | None, Event, dict[str, str]]]:
        """Every message in REPORTS: (origin by source header, event, headers)."""
        info = await self.store.stream_info(REPORTS_STREAM)
        last = int(info["state"]["last_seq"])
        decoder = EventDecoder()
        found = []
        for seq in range(int(info["state"]["first_seq"] or 1), last + 1):
            reply = await self.store.nc.request(
                f"$JS.API.DIRECT.GET.{REPORTS_STREAM}", orjson.dumps({"seq": seq}), timeout=5
            )
            headers = dict(reply.headers or {})
            if headers.get("Status"):
                continue
            subject = headers.get("Nats-Subject", "")
            found.append(
                (edges.report_origin(subject, headers), decoder.decode(reply.data), headers)
            )
        return found

    async def restart_server(self) -> None:
        await asyncio.to_thread(self.server.start)


@asynccontextmanager
async def edge_hub(
    root: Path,
    *,
    ws: bool = False,
    settle: float = 0.5,
    cooldown: float = 1.0,
    sim_clusters: int = 0,
    sim_inventory_interval: float = 0.3,
) -> AsyncIterator[EdgeHub]:
    data = DataDir(root / "hub")
    data.create()
    leaf_port = free_port()
    ws_port = free_port() if ws else None
    listener = prepare_listener(
        data,
        host="127.0.0.1",
        port=leaf_port,
        ws_port=ws_port,
        public_host=None,
        now=datetime.now(UTC),
    )
    port = free_port()
    server = await asyncio.to_thread(
        start_hub_nats, data, host="127.0.0.1", port=port, leaf_block=listener.render()
    )
    store: EventStore | None = None
    services: EdgeServices | None = None
    hub: EdgeHub | None = None
    try:
        # As `fleetbus up` connects it: the FLEET account made known, the log's secrets sealed
        # with the data dir's keyring.
        store = await connect_hub_store(data, server.client_url)
        await store.ensure_streams(hub_streams())
        services = EdgeServices(
            store=store,
            urls=[server.client_url],
            data=data,
            leaf_urls=[f"tls://127.0.0.1:{leaf_port}"],
            antientropy_settle=timedelta(seconds=settle),
            antientropy_cooldown=timedelta(seconds=cooldown),
        )
        hub = EdgeHub(root, data, server, store, services, leaf_port, ws_port)
        await services.start(
            sim_clusters=sim_clusters, sim_inventory_interval=sim_inventory_interval
        )
        yield hub
    finally:
        if hub is not None:
            for runtime in list(hub.edges):
                await runtime.stop()
        if services is not None:
            await services.stop()
        if store is not None:
            await store.close()
        await asyncio.to_thread(server.stop)


def leaf_connections(server: NatsServer) -> list[dict[str, Any]]:
    """The hub's current leaf connections (monitoring endpoint `/leafz`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/leafz", timeout=2) as r:
        leafz: dict[str, Any] = orjson.loads(r.read())
    return list(leafz.get("leafs") or [])


def leaf_names(server: NatsServer) -> set[str]:
    return {str(leaf.get("name")) for leaf in leaf_connections(server)}


def start_raw_leaf(root: Path, name: str, hub_url: str, tls_block: str) -> NatsServer:
    """A leaf nats-server with a hand-written TLS block, for connections meant to fail."""
    root.mkdir(parents=True, exist_ok=True)
    port, monitor_port = free_port(), free_port()
    config = root / "leaf.conf"
    config.write_text(
        f'server_name: "{name}"\n'
        f'listen: "127.0.0.1:{port}"\n'
        f'http: "127.0.0.1:{monitor_port}"\n'
        "leafnodes {\n"
        '  reconnect: "1s"\n'
        f'  remotes: [ {{ urls: ["{hub_url}"], tls {{ {tls_block} }} }} ]\n'
        "}\n"
    )
    server = NatsServer(
        config_path=config,
        client_url=f"nats://127.0.0.1:{port}",
        monitor_port=monitor_port,
        log_path=root / "nats.log",
    )
    server.start()
    return server


def log_mentions(server: NatsServer, *needles: str) -> bool:
    try:
        text = server.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return any(needle in text for needle in needles)
