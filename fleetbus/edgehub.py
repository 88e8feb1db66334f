"""The hub's edge-facing side, wired: leafnode listener, access, provisioning, anti-entropy, sims.

`fleetbus up` wires these around its embedded nats-server, under the hub's one supervisor:
- the TLS leafnode listener (port 443 by default, optionally WebSocket) with a server
  certificate from the fleetbus CA (created in the data dir on first start); on a NATS cluster
  (`--nats-url`) every node has its own, and bundles list them all (`cluster_leaf_urls`);
- `access.service.ClusterAccessService`: the FLEET account's revocations, pushed to every
  server of the hub's NATS;
- `access.project_accounts.ProjectAccountService`: one NATS account per project, with the
  JetStream limits of its quotas, on every server;
- `access.consumer_gate.ConsumerGate`: the only way an edge's mirror gets its consumer on DESIRED;
- `scheduler.provisioning`: each cluster's durable consumer on DESIRED and REPORTS' sources,
  and the revival of stalled sources;
- `scheduler.antientropy`: inventory digests compared with DESIRED, re-delivery on mismatch;
- `scheduler.cluster_health`: `ClusterHealthChanged` when a cluster goes silent or its
  connector or controller turns not ready (and when it is well again);
- `simulator.fleet.SimFleet` for `--sim-clusters N`, whose edges `HubSimEdges` starts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from access.account_push import AccountPublisher
from access.consumer_gate import ConsumerGate
from access.key_service import KeyService
from access.nats_accounts import FLEET_ACCOUNT, NatsAuthority
from access.permissions import LeafListener, leaf_credentials
from access.pki import HubPki, IssuedCertificate
from access.project_accounts import ProjectAccountService
from access.service import ClusterAccessService
from events.store import EventStore
from events.tasks import cancel_and_wait
from fleetbus.bundle import EdgeSettings, read_edge_bundle, write_edge_bundle
from fleetbus.datadir import DataDir
from fleetbus.edge import EdgeRuntime, EdgeState
from fleetbus.errors import ServerFailed
from fleetbus.simworker import WORKER_COMMAND, start_client_sim
from fleetbus.supervision import Supervisor
from scheduler.antientropy import AntiEntropyService
from scheduler.cluster_health import ClusterHealthWatch
from scheduler.durable_moves import DurableMoves
from scheduler.provisioning import DurableRehoming, ProvisioningService, SourceRevival
from simulator.executor import SimExecutor
from simulator.fleet import SimFleet, sim_processes_for

log = logging.getLogger(__name__)


def hub_pki(data: DataDir) -> HubPki:
    return HubPki(data.root / "pki")


def server_hosts(public_host: str | None) -> list[str]:
    hosts = ["localhost", "127.0.0.1", socket.gethostname()]
    if public_host:
        hosts.insert(0, public_host)
    return list(dict.fromkeys(hosts))


def prepare_listener(
    data: DataDir,
    *,
    host: str,
    port: int,
    ws_port: int | None,
    public_host: str | None,
    now: datetime,
) -> LeafListener:
    """Create the CA (first start) and a current server certificate; describe the listener."""
    pki = hub_pki(data)
    pki.ensure_server_cert(server_hosts(public_host), now)
    return LeafListener(pki=pki, host=host, port=port, ws_port=ws_port)


def leaf_urls(listener: LeafListener, public_host: str | None) -> dict[str, list[str]]:
    host = public_host or socket.gethostname()
    urls = {"leaf_urls": [f"tls://{host}:{listener.port}"]}
    if listener.ws_port is not None:
        urls["leaf_ws_urls"] = [f"wss://{host}:{listener.ws_port}"]
    return urls


async def cluster_leaf_urls(
    publisher: AccountPublisher, public_host: str | None = None
) -> list[str]:
    """The leafnode URL of every server of the hub's NATS (from each one's `VARZ`), sorted by
    server name: what an edge bundle lists, so an edge can dial any node. A node listening on
    every address is named by `public_host` (or this host's name)."""
    found: dict[str, str] = {}
    for answer in await publisher.ping("VARZ"):
        varz = answer.get("data") or {}
        leaf = varz.get("leaf") or {}
        port = leaf.get("port")
        if not port:
            continue
        host = str(leaf.get("host") or "")
        if host in ("", "0.0.0.0", "::"):
            host = public_host or socket.gethostname()
        found[str(varz.get("server_name") or varz.get("server_id"))] = f"tls://{host}:{port}"
    if not found:
        raise ServerFailed(
            "no server of the hub's NATS has a leafnode listener: edges could not join "
            "(give every node a `leafnodes` block, see infra/nats/cluster-node.conf.tmpl)"
        )
    return [found[name] for name in sorted(found)]


@dataclass(frozen=True)
class HubSimEdges:
    """`simulator.fleet.SimEdges` for the hub: sims run the real edge runtime."""

    hub_secret: str
    authority: NatsAuthority
    leaf_url: str
    inventory_interval: float
    worker_command: tuple[str, ...] = WORKER_COMMAND

    def write_leaf_bundle(
        self,
        directory: Path,
        cluster: str,
        labels: Mapping[str, str],
        *,
        ca_pem: bytes,
        issued: IssuedCertificate,
    ) -> None:
        settings = EdgeSettings(
            cluster=cluster,
            hub_urls=[self.leaf_url],
            inventory_interval=self.inventory_interval,
            labels=dict(labels),
        )
        write_edge_bundle(
            directory / "bundle",
            settings,
            ca_pem=ca_pem,
            issued=issued,
            credentials=leaf_credentials(
                self.authority,
                cluster,
                issued.fingerprint,
                expires=issued.certificate.not_valid_after_utc,
            ),
        )

    async def start_leaf(self, cluster: str, directory: Path) -> EdgeRuntime:
        return await EdgeRuntime.leaf(
            read_edge_bundle(directory / "bundle"),
            EdgeState(directory / "state"),
            SimExecutor(name=cluster),
            inventory_interval=self.inventory_interval,
        )

    async def start_client(self, cluster: str, hub_urls: Sequence[str]) -> EdgeRuntime:
        return await start_client_sim(cluster, hub_urls, self.hub_secret, self.inventory_interval)


@dataclass
class EdgeServices:
    """The hub services facing the edges, run under the hub's supervisor beside the HTTP API."""

    store: EventStore
    urls: list[str]
    """Client URLs of the hub's NATS (one embedded server, or every node of a cluster)."""
    data: DataDir
    leaf_urls: list[str]
    """The leafnode URLs bundles list: every node's."""
    replicas: int = 1
    """Replicas of the hub's streams (REPORTS is re-declared with its sources)."""
    antientropy_settle: timedelta = timedelta(seconds=10)
    antientropy_cooldown: timedelta = timedelta(seconds=30)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sims: SimFleet | None = None
    sim_leaf_url: str | None = None
    """Where simulated leaf edges dial (loopback); the first of `leaf_urls` if unset."""
    revive_interval: float = 2.0
    """Pause between checks for stalled REPORTS sources (see `SourceRevival.interval`)."""
    supervisor: Supervisor = field(default_factory=Supervisor)

    def __post_init__(self) -> None:
        credentials = self.data.hub_credentials
        self.authority = self.data.nats_authority()
        self.publisher = AccountPublisher(self.urls, self.data.system_credentials)
        self.consumer_gate = ConsumerGate(
            url=self.urls,
            credentials=credentials,
            registered=lambda: self.access.clusters.keys(),
        )
        self.key_service = KeyService(
            url=self.urls,
            credentials=credentials,
            keys=self.data.keyring(),
            registered=lambda: self.access.clusters.keys(),
        )
        self.access = ClusterAccessService(
            self.store,
            authority=self.authority,
            publisher=self.publisher,
            state_dir=self.data.root,
            consumer_gate=self.consumer_gate,
        )
        self.projects = ProjectAccountService(
            self.store,
            authority=self.authority,
            publisher=self.publisher,
            sign=self.access.account_jwt,
            pushing=self.access.pushing,
        )
        self.provisioning = ProvisioningService(self.store, replicas=self.replicas)
        self.antientropy = AntiEntropyService(
            self.store,
            settle=self.antientropy_settle,
            cooldown=self.antientropy_cooldown,
            clock=self.clock,
        )
        antientropy = self.antientropy
        self.health = ClusterHealthWatch(
            self.store,
            last_seen=lambda: antientropy.last_seen,
            edge_status=lambda: antientropy.edge_status,
            registered=lambda: self.access.clusters.keys(),
            clock=self.clock,
        )
        # Durables are moved only off a node holding a replica of DESIRED: with one replica
        # there is nothing to move, and no record of moves to keep.
        self.rehoming = DurableRehoming(
            self.provisioning,
            moves=DurableMoves(self.store, replicas=self.replicas) if self.replicas > 1 else None,
        )
        self.revival = SourceRevival(
            self.provisioning,
            last_seen=lambda: antientropy.last_seen,
            clock=self.clock,
            interval=self.revive_interval,
        )

    async def start(
        self,
        *,
        sim_clusters: int = 0,
        sim_inventory_interval: float = 30.0,
        sim_processes: int | None = None,
    ) -> None:
        """Start the services; return once access and provisioning reflect the whole log
        and the simulated clusters (if any) are connected."""
        processes = sim_processes_for(sim_clusters, sim_processes) if sim_clusters else 0
        access_ready = asyncio.Event()
        gate_ready = asyncio.Event()
        keys_ready = asyncio.Event()
        projects_ready = asyncio.Event()
        started = [
            self.supervisor.start("consumer gate", lambda: self.consumer_gate.run(gate_ready)),
            self.supervisor.start("key service", lambda: self.key_service.run(keys_ready)),
            self.supervisor.start("cluster access", lambda: self.access.run(access_ready)),
            self.supervisor.start(
                "project accounts", partial(self._run_projects, access_ready, projects_ready)
            ),
            self.supervisor.start("provisioning", self.provisioning.run),
            self.supervisor.start("anti-entropy", self.antientropy.run),
            self.supervisor.start("cluster health", self.health.run),
            self.supervisor.start("source revival", self.revival.run),
            self.supervisor.start("durable rehoming", self.rehoming.run),
        ]

        async def both_ready() -> None:
            await gate_ready.wait()
            await keys_ready.wait()
            await access_ready.wait()
            await projects_ready.wait()
            await self.provisioning.ready.wait()

        ready = asyncio.create_task(both_ready())
        await asyncio.wait([ready, *started], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            await cancel_and_wait([ready])
            for task in started:
                if task.done():
                    task.result()
            raise ServerFailed("a hub edge service stopped while starting")
        if sim_clusters > 0:
            # Client sims sign their own user JWTs (`access.permissions.client_credentials`).
            hub_secret = self.authority.account(FLEET_ACCOUNT).seed
            self.sims = SimFleet(
                store=self.store,
                root=self.data.root / "sims",
                pki=hub_pki(self.data),
                access=self.access,
                provisioning=self.provisioning,
                edges=HubSimEdges(
                    hub_secret=hub_secret,
                    authority=self.authority,
                    leaf_url=self.sim_leaf_url or self.leaf_urls[0],
                    inventory_interval=sim_inventory_interval,
                ),
                count=sim_clusters,
                hub_client_urls=self.urls,
                hub_secret=hub_secret,
                inventory_interval=sim_inventory_interval,
                processes=processes,
            )
            await self.sims.start(self.clock())

    async def _run_projects(self, access_ready: asyncio.Event, ready: asyncio.Event) -> None:
        """The project accounts, once cluster access has pushed what the log says: an account
        JWT it signs carries its clusters' links, which must be folded whole first."""
        await access_ready.wait()
        await self.projects.run(ready)

    async def stop_sims(self) -> None:
        if self.sims is not None:
            await self.sims.stop()

    async def stop(self) -> None:
        await self.stop_sims()
        await self.supervisor.stop()
