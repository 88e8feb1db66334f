"""A simulated fleet: clusters sim-1..sim-N, each an in-memory executor behind a real connector.

`fleetbus up --sim-clusters N` runs one. Up to `LEAF_SIM_LIMIT` clusters get their own leaf
nats-server exactly like a real edge; a larger fleet connects its clusters to the hub as plain
clients with per-cluster credentials (durable consumers, reports published straight into
REPORTS) so a laptop can simulate hundreds of clusters without hundreds of processes. Past
`IN_PROCESS_SIM_LIMIT` clusters (or with `--sim-processes K`) the client sims run in K worker
processes (`simulator.workers`), about `SIMS_PER_PROCESS` each: one event loop cannot drive
thousands of connectors. The hub still registers and provisions every sim itself.

Starting thousands of sims is paced: their durables are reset and their connections opened a
bounded number at a time, and the wait for provisioning grows with the fleet, so a 10,000
cluster fleet starts without flooding the JetStream API.

A simulator is an edge runtime, not wiring: how one simulated edge is started (a leaf
nats-server and a connector, or a client connection) is the composition root's, and comes in
through `SimEdges`; cluster access and provisioning come in through their own small ports.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from access.permissions import ClusterAccess
from access.pki import CertificateAuthority, HubPki, IssuedCertificate, public_key_fingerprint
from events import edges
from events.appends import Append, AppendResult
from events.catalog import ClusterRegistered, Event
from events.errors import EventLogError, EventLogUnavailable
from events.ids import new_event_id
from events.store import EventStore
from simulator.errors import InvalidSimFleet, SimFleetFailed
from simulator.heap import settle_heap
from simulator.workers import (
    RunningEdge,
    SimWorker,
    hub_urls_for,
    sim_index,
    start_bounded,
    worker_slices,
)

log = logging.getLogger(__name__)


class SimEdges(Protocol):
    """How the composition root runs a simulated cluster's edge."""

    @property
    def worker_command(self) -> Sequence[str]:
        """The command line of a worker process (`python -m fleetbus.simworker`)."""

    def write_leaf_bundle(
        self,
        directory: Path,
        cluster: str,
        labels: Mapping[str, str],
        *,
        ca_pem: bytes,
        issued: IssuedCertificate,
    ) -> None:
        """Write the edge bundle a leaf sim starts from (as `fleetbus cluster register`) into
        `directory/bundle/`."""

    async def start_leaf(self, cluster: str, directory: Path) -> RunningEdge:
        """Start a leaf nats-server and connector from `directory/bundle/`, keeping its
        JetStream state in `directory/state/`."""

    async def start_client(self, cluster: str, hub_urls: Sequence[str]) -> RunningEdge:
        """Start a connector that connects to the hub as a plain client, to the first of
        `hub_urls` while it answers, then the next."""


class FleetAccess(Protocol):
    """Cluster access as the simulator needs it (`access.service.ClusterAccessService`)."""

    @property
    def clusters(self) -> Mapping[str, ClusterAccess]: ...

    async def wait_applied(self, seq: int) -> None: ...


class DurableReset(Protocol):
    async def reset_durables(self, clusters: Iterable[str]) -> None: ...


class FleetProvisioning(Protocol):
    """Provisioning as the simulator needs it (`scheduler.provisioning.ProvisioningService`)."""

    @property
    def provisioner(self) -> DurableReset: ...

    async def wait_applied(self, seq: int) -> None: ...


LEAF_SIM_LIMIT = 20
REGISTER_ATTEMPTS = 3
"""Rounds of sending again the registrations left unanswered (each is retried within a round
too, `events.appends`)."""
REGISTER_WINDOW = 256
"""Registrations in flight at once: the next are sent when these are answered."""
SIM_LABEL = "fleetbus.io/sim"
IN_PROCESS_SIM_LIMIT = 1000
"""Without `--sim-processes`, fleets up to this size run in the hub process."""
SIMS_PER_PROCESS = 2500
"""Without `--sim-processes`, a larger fleet gets one worker process per this many sims."""
SIM_BUDGET_BASE_S = 60.0
SIM_BUDGET_PER_CLUSTER_S = 0.1
"""Each wait of a sim fleet's start (access and provisioning; connecting) may take the base
plus this per cluster: 60 s for a few, about 18 minutes for 10,000. Measured on 2 cores shared
with other work (load average near 9), 5,000 client sims spread over a 3-node cluster had not
all connected after 210 s (4,600 had), so the earlier 0.03 s per cluster stopped fleets that
were still making progress."""


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


def sim_labels(index: int, leaf: bool) -> dict[str, str]:
    labels = {SIM_LABEL: "true", "env": "dev" if index % 2 else "prod"}
    if not leaf:
        labels[edges.CONNECTION_LABEL] = edges.CLIENT
    return labels


async def register_clusters(store: EventStore, registrations: Sequence[Event]) -> int:
    """Append the registrations, each its own command, pipelined `REGISTER_WINDOW` at a
    time; the sequence of the last one stored (0 for none).

    A registration needs no other in the same write: one atomic batch of hundreds of them
    is one large write that a 3-node cluster under load answered too late, and a batch
    sent again is all of it again. Each registration alone is a small write the server
    answers as soon as it is stored, a window of them in flight at a time (the next
    waits for their answers), and one left unanswered is sent again alone, up to
    `REGISTER_ATTEMPTS` times: its event keeps its id, so one that was stored after all
    is recognised (`Nats-Msg-Id`), not stored twice."""
    pending = list(registrations)
    last = 0
    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        outcomes = await store.append_many(
            [Append([event]) for event in pending], window=REGISTER_WINDOW
        )
        failed: list[Event] = []
        trouble: EventLogError | None = None
        for event, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, AppendResult):
                last = max([last, *outcome.sequences])
            elif isinstance(outcome, EventLogUnavailable):
                failed.append(event)
                trouble = outcome
            else:
                raise outcome
        if not failed:
            return last
        if attempt == REGISTER_ATTEMPTS:
            raise trouble or EventLogUnavailable("registrations not stored")
        log.warning(
            "registering simulated clusters: %d of %d not stored (%s); sending them again",
            len(failed),
            len(pending),
            trouble,
        )
        pending = failed
        await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass
class SimFleet:
    """Simulated clusters sim-1..sim-N behind real connectors."""

    store: EventStore
    root: Path
    """Where each leaf sim keeps its bundle and state (`<root>/<name>/`)."""
    pki: HubPki
    access: FleetAccess
    provisioning: FleetProvisioning
    edges: SimEdges
    count: int
    hub_client_urls: Sequence[str]
    """The hub's client URLs (one per node): the clusters are spread over them
    (`simulator.workers.hub_urls_for`)."""
    hub_secret: str
    inventory_interval: float = 30.0
    processes: int = 0
    """Worker processes running the sims; 0 runs them in this process."""
    runtimes: list[RunningEdge] = field(default_factory=list)
    workers: list[SimWorker] = field(default_factory=list)

    @property
    def leaf(self) -> bool:
        return self.count <= LEAF_SIM_LIMIT and self.processes == 0

    def names(self) -> list[str]:
        return [f"sim-{i}" for i in range(1, self.count + 1)]

    def sim_dir(self, name: str) -> Path:
        return self.root / name

    async def start(self, now: datetime) -> None:
        began = time.monotonic()
        ca = self.pki.load_ca()
        # A durable provisioned for a cluster registered only now has delivered nothing yet;
        # one of an earlier start may have, and an in-memory sim needs everything again.
        earlier = [name for name in self.names() if name in self.access.clusters]
        registrations: list[Event] = []
        for index, name in enumerate(self.names(), start=1):
            wanted = self._registration(ca, index, name, now)
            if wanted is not None:
                registrations.append(wanted)
        last = await register_clusters(self.store, registrations)
        budget = sim_budget(self.count)
        started = time.monotonic()
        registered = started - began
        if last:
            try:
                async with asyncio.timeout(budget):
                    await self.access.wait_applied(last)
                    await self.provisioning.wait_applied(last)
            except TimeoutError as e:
                raise SimFleetFailed(
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
            raise SimFleetFailed(
                f"connecting {self.count:,} simulated clusters took longer than {budget:.0f} s"
            ) from e
        if not self.processes and not self.leaf:
            # Client sims in this process: its collector would spend more time walking
            # their objects than the sims spend delivering (`simulator.heap`).
            settle_heap()
        log.info(
            "simulated fleet up: %d clusters (%s) in %s; "
            "registered in %.1f s, provisioned in %.1f s, connected in %.1f s",
            self.count,
            "leaf" if self.leaf else "client",
            f"{self.processes} worker processes" if self.processes else "the hub process",
            registered,
            provisioned - started,
            time.monotonic() - provisioned,
        )

    async def _start_workers(self) -> None:
        for first, last in worker_slices(self.count, self.processes):
            self.workers.append(
                await SimWorker.spawn(
                    first,
                    last,
                    command=self.edges.worker_command,
                    hub_urls=self.hub_client_urls,
                    hub_secret=self.hub_secret,
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
            self.edges.write_leaf_bundle(
                self.sim_dir(name), name, labels, ca_pem=ca.cert_pem, issued=issued
            )
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

    async def _start_one(self, name: str) -> RunningEdge:
        if self.leaf:
            return await self.edges.start_leaf(name, self.sim_dir(name))
        return await self.edges.start_client(
            name, hub_urls_for(sim_index(name), self.hub_client_urls)
        )

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers))
        self.workers = []
        await asyncio.gather(*(runtime.stop() for runtime in self.runtimes))
        self.runtimes = []
