"""The hub's edge-facing side: leafnode listener, cluster access, provisioning, anti-entropy, sims.

`fleetbus up` wires these around its embedded nats-server:
- the TLS leafnode listener (port 443 by default, optionally WebSocket) with a server
  certificate from the fleetbus CA (created in the data dir on first start);
- `ClusterAccessService`: NATS users and pinned certificates of the registered clusters;
- `ProvisioningService`: each cluster's durable consumer on DESIRED and REPORTS' sources;
- `AntiEntropyService`: inventory digests compared with DESIRED, re-delivery on mismatch;
- `SimFleet` for `--sim-clusters N`: clusters sim-1..sim-N, each an in-memory executor behind
  the real connector. Up to `LEAF_SIM_LIMIT` of them get their own leaf nats-server exactly
  like a real edge; a larger fleet connects its clusters to the hub as plain clients with
  per-cluster credentials (durable consumers, reports published straight into REPORTS) so a
  laptop can simulate hundreds of clusters without hundreds of processes. Past
  `IN_PROCESS_SIM_LIMIT` clusters (or with `--sim-processes K`) the client sims run in K worker
  processes (`fleetbus.simworker`), about `SIMS_PER_PROCESS` each: one event loop cannot drive
  thousands of connectors. The hub still registers and provisions every sim itself.

Starting thousands of sims is paced: their durables are reset and their connections opened a
bounded number at a time, and the wait for provisioning grows with the fleet, so a 10,000
cluster fleet starts without flooding the JetStream API.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_connector.simulator import SimExecutor
from events import edges
from events.catalog import ClusterRegistered, Event
from events.errors import EventLogError
from events.ids import new_event_id
from events.store import EventStore
from events.tasks import cancel_and_wait
from fleetbus.access import ClusterAccessService, ConfigText, LeafListener
from fleetbus.bundle import EdgeSettings, read_edge_bundle, write_edge_bundle
from fleetbus.datadir import DataDir
from fleetbus.edge import EdgeRuntime, EdgeState
from fleetbus.errors import InvalidSimFleet, ServerFailed
from fleetbus.natsserver import NatsServer
from fleetbus.pki import CertificateAuthority, HubPki, public_key_fingerprint
from fleetbus.simworker import SimWorker, start_bounded, start_client_sim, worker_slices
from scheduler.antientropy import AntiEntropyService
from scheduler.provisioning import ProvisioningService
from taskset.errors import FleetbusError

log = logging.getLogger(__name__)

LEAF_SIM_LIMIT = 20
REACHABLE_WITHIN = timedelta(seconds=90)
"""A cluster that sent an inventory digest this recently counts as connected."""
REVIVE_COOLDOWN = timedelta(seconds=10)
REVIVE_PAUSE_PER_SOURCE = 0.001
"""Seconds added to the pause between source-revival checks per REPORTS source."""
SIM_LABEL = "fleetbus.io/sim"
IN_PROCESS_SIM_LIMIT = 1000
"""Without `--sim-processes`, fleets up to this size run in the hub process."""
SIMS_PER_PROCESS = 2500
"""Without `--sim-processes`, a larger fleet gets one worker process per this many sims."""
SIM_BUDGET_BASE_S = 60.0
SIM_BUDGET_PER_CLUSTER_S = 0.03
"""Each wait of a sim fleet's start (access and provisioning; connecting) may take the base
plus this per cluster: 60 s for a few, 6 minutes for 10,000."""


def sim_processes_for(clusters: int, requested: int | None) -> int:
    """Worker processes for `clusters` sims: `requested`, or by size (0 = in the hub process).

    Raises `InvalidSimFleet` for a request that cannot be met."""
    if requested is None:
        if clusters <= IN_PROCESS_SIM_LIMIT:
            return 0
        return math.ceil(clusters / SIMS_PER_PROCESS)
    if requested < 1:
        raise InvalidSimFleet(
            f"--sim-processes must be at least 1, not {requested} "
            f"(leave it out to run up to {IN_PROCESS_SIM_LIMIT:,} sims in the hub process)"
        )
    if requested > clusters:
        raise InvalidSimFleet(
            f"--sim-processes {requested} is more than --sim-clusters {clusters}: "
            "each worker process runs at least one simulated cluster"
        )
    return requested


def sim_budget(clusters: int) -> float:
    """Seconds one stage of starting `clusters` sims may take before the start fails."""
    return SIM_BUDGET_BASE_S + SIM_BUDGET_PER_CLUSTER_S * clusters


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


def sim_labels(index: int, leaf: bool) -> dict[str, str]:
    labels = {SIM_LABEL: "true", "env": "dev" if index % 2 else "prod"}
    if not leaf:
        labels[edges.CONNECTION_LABEL] = edges.CLIENT
    return labels


@dataclass
class SimFleet:
    """Simulated clusters sim-1..sim-N behind real connectors."""

    store: EventStore
    data: DataDir
    access: ClusterAccessService
    provisioning: ProvisioningService
    count: int
    hub_client_url: str
    leaf_url: str
    inventory_interval: float = 30.0
    processes: int = 0
    """Worker processes running the sims; 0 runs them in this process."""
    runtimes: list[EdgeRuntime] = field(default_factory=list)
    workers: list[SimWorker] = field(default_factory=list)

    @property
    def leaf(self) -> bool:
        return self.count <= LEAF_SIM_LIMIT and self.processes == 0

    def names(self) -> list[str]:
        return [f"sim-{i}" for i in range(1, self.count + 1)]

    def sim_dir(self, name: str) -> Path:
        return self.data.root / "sims" / name

    async def start(self, now: datetime) -> None:
        ca = hub_pki(self.data).load_ca()
        # A durable provisioned for a cluster registered only now has delivered nothing yet;
        # one of an earlier start may have, and an in-memory sim needs everything again.
        earlier = [name for name in self.names() if name in self.access.clusters]
        registrations: list[Event] = []
        for index, name in enumerate(self.names(), start=1):
            wanted = self._registration(ca, index, name, now)
            if wanted is not None:
                registrations.append(wanted)
        last = 0
        for start in range(0, len(registrations), 500):
            result = await self.store.append(registrations[start : start + 500])
            last = max(result.sequences or [last])
        budget = sim_budget(self.count)
        started = time.monotonic()
        if last:
            try:
                async with asyncio.timeout(budget):
                    await self.access.wait_applied(last)
                    await self.provisioning.wait_applied(last)
            except TimeoutError as e:
                raise ServerFailed(
                    f"access and provisioning of {self.count:,} simulated clusters took longer "
                    f"than {budget:.0f} s"
                ) from e
        if not self.leaf:
            await self.provisioning.provisioner.reset_durables(earlier)
        provisioned = time.monotonic()
        try:
            async with asyncio.timeout(budget):
                if self.processes:
                    await self._start_workers()
                else:
                    self.runtimes = await start_bounded(self.names(), self._start_one)
        except TimeoutError as e:
            raise ServerFailed(
                f"connecting {self.count:,} simulated clusters took longer than {budget:.0f} s"
            ) from e
        log.info(
            "simulated fleet up: %d clusters (%s) in %s; "
            "provisioned in %.1f s, connected in %.1f s",
            self.count,
            "leaf" if self.leaf else "client",
            f"{self.processes} worker processes" if self.processes else "the hub process",
            provisioned - started,
            time.monotonic() - provisioned,
        )

    async def _start_workers(self) -> None:
        secret = self.data.secrets()["hub_password"]
        for first, last in worker_slices(self.count, self.processes):
            self.workers.append(
                await SimWorker.spawn(
                    first,
                    last,
                    hub_url=self.hub_client_url,
                    hub_secret=secret,
                    inventory_interval=self.inventory_interval,
                )
            )
        await asyncio.gather(*(worker.wait_ready() for worker in self.workers))

    def _registration(
        self, ca: CertificateAuthority, index: int, name: str, now: datetime
    ) -> ClusterRegistered | None:
        current = self.access.clusters.get(name)
        labels = sim_labels(index, self.leaf)
        fingerprint = ""
        if self.leaf:
            bundle_dir = self.sim_dir(name) / "bundle"
            cert = bundle_dir / "cluster.crt"
            if (
                current is not None
                and current.connection == edges.LEAF
                and cert.exists()
                and public_key_fingerprint(cert.read_bytes()) == current.fingerprint
            ):
                return None
            issued = ca.issue_cluster(name, now)
            settings = EdgeSettings(
                cluster=name,
                hub_urls=[self.leaf_url],
                inventory_interval=self.inventory_interval,
                labels=labels,
            )
            write_edge_bundle(bundle_dir, settings, ca_pem=ca.cert_pem, issued=issued)
            fingerprint = issued.fingerprint
        elif current is not None and current.connection == edges.CLIENT:
            return None
        return ClusterRegistered(
            id=new_event_id(),
            occurred_at=now,
            actor="hub:sim-fleet",
            cluster=name,
            labels=labels,
            certificate_fingerprint=fingerprint,
        )

    async def _start_one(self, name: str) -> EdgeRuntime:
        if self.leaf:
            bundle = read_edge_bundle(self.sim_dir(name) / "bundle")
            return await EdgeRuntime.leaf(
                bundle,
                EdgeState(self.sim_dir(name) / "state"),
                SimExecutor(name=name),
                inventory_interval=self.inventory_interval,
            )
        return await start_client_sim(
            name, self.hub_client_url, self.data.secrets()["hub_password"], self.inventory_interval
        )

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers))
        self.workers = []
        await asyncio.gather(*(runtime.stop() for runtime in self.runtimes))
        self.runtimes = []


async def supervise(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a log-following service; when it fails for an expected reason (the log unreachable
    while the hub's nats-server restarts, a reload refused), start it again from the log after
    a pause. Each service rebuilds its state from the log, so a restart loses nothing."""
    delay = 0.5
    while True:
        try:
            await run()
            return
        except EventLogError as e:
            log.warning("%s interrupted (%s); restarting in %.1fs", name, e, delay)
        except FleetbusError as e:
            log.error("%s failed (%s); restarting in %.1fs", name, e, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


@dataclass
class EdgeServices:
    """The hub services facing the edges, run as tasks beside the HTTP API."""

    store: EventStore
    server: NatsServer
    data: DataDir
    listener: LeafListener
    config_text: ConfigText
    antientropy_settle: timedelta = timedelta(seconds=10)
    antientropy_cooldown: timedelta = timedelta(seconds=30)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    sims: SimFleet | None = None
    revive_interval: float = 2.0
    """Pause between checks for stalled REPORTS sources, plus `REVIVE_PAUSE_PER_SOURCE` per
    source: each check reads REPORTS' info, which nats-server builds source by source (at
    10,000 sources a check every 2 s costs the server a tenth of a core)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _revived: dict[str, datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.access = ClusterAccessService(
            self.store,
            server=self.server,
            data=self.data,
            listener=self.listener,
            config_text=self.config_text,
        )
        self.provisioning = ProvisioningService(self.store)
        self.antientropy = AntiEntropyService(
            self.store,
            settle=self.antientropy_settle,
            cooldown=self.antientropy_cooldown,
            clock=self.clock,
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
        self.tasks = [
            asyncio.create_task(
                supervise("cluster access", lambda: self.access.run(access_ready)),
                name="cluster-access",
            ),
            asyncio.create_task(
                supervise("provisioning", self.provisioning.run), name="provisioning"
            ),
            asyncio.create_task(
                supervise("anti-entropy", self.antientropy.run), name="anti-entropy"
            ),
            asyncio.create_task(
                supervise("source revival", self._revive_sources), name="source-revival"
            ),
        ]

        async def both_ready() -> None:
            await access_ready.wait()
            await self.provisioning.ready.wait()

        ready = asyncio.create_task(both_ready())
        await asyncio.wait([ready, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            for task in self.tasks:
                if task.done():
                    task.result()
            raise ServerFailed("a hub edge service stopped while starting")
        if sim_clusters > 0:
            self.sims = SimFleet(
                store=self.store,
                data=self.data,
                access=self.access,
                provisioning=self.provisioning,
                count=sim_clusters,
                hub_client_url=self.server.client_url,
                leaf_url=f"tls://127.0.0.1:{self.listener.port}",
                inventory_interval=sim_inventory_interval,
                processes=processes,
            )
            await self.sims.start(self.clock())

    async def _revive_sources(self) -> None:
        """Restart stalled REPORTS sourcing of clusters that are demonstrably connected."""
        while True:
            # Only leaf clusters are sourced; clients publish into REPORTS themselves.
            sourced = {
                name
                for name, connection in self.provisioning.provisioned.items()
                if connection == edges.LEAF
            }
            await asyncio.sleep(self.revive_interval + REVIVE_PAUSE_PER_SOURCE * len(sourced))
            now = self.clock()
            reachable = {
                name
                for name, seen in self.antientropy.last_seen.items()
                if name in sourced
                and now - seen < REACHABLE_WITHIN
                and now - self._revived.get(name, datetime.min.replace(tzinfo=UTC))
                > REVIVE_COOLDOWN
            }
            if reachable:
                for name in await self.provisioning.revive_sources(reachable):
                    self._revived[name] = now

    async def stop(self) -> None:
        if self.sims is not None:
            await self.sims.stop()
        results = await cancel_and_wait(self.tasks)
        for result in results:
            if isinstance(result, Exception):
                log.error("hub edge service failed", exc_info=result)
        self.tasks = []
