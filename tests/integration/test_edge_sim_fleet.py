"""`fleetbus up --sim-clusters N`: simulated clusters behind real connectors and real access."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
import orjson
import pytest

from access.nats_accounts import FLEET_ACCOUNT
from access.permissions import client_credentials
from events import edges
from events.catalog import ClusterRegistered, TaskApplied
from events.codec import encode_event
from events.ids import new_event_id
from events.store import connect
from fleetbus.edge import EdgeRuntime
from simulator.executor import SimExecutor
from tests.eventually import eventually
from tests.integration.edge_harness import (
    EdgeHub,
    cluster_task,
    edge_hub,
    leaf_names,
    sample_taskset,
)


async def registrations(hub: EdgeHub) -> dict[str, ClusterRegistered]:
    found = {}
    async for stored in hub.store.read(subject="fleet.evt.cluster.>"):
        if isinstance(stored.event, ClusterRegistered):
            found[stored.event.cluster] = stored.event
    return found


def sim_of(hub: EdgeHub, name: str) -> SimExecutor:
    assert hub.services.sims is not None
    for runtime in hub.services.sims.runtimes:
        assert isinstance(runtime, EdgeRuntime)
        if runtime.cluster == name:
            assert isinstance(runtime.executor, SimExecutor)
            return runtime.executor
    raise AssertionError(f"no simulated cluster {name}")


async def test_a_small_simulated_fleet_runs_each_cluster_behind_its_own_leaf(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path, sim_clusters=3) as hub:
        registered = await registrations(hub)
        assert sorted(registered) == ["sim-1", "sim-2", "sim-3"]
        assert [registered[f"sim-{i}"].labels.get("env") for i in (1, 2, 3)] == [
            "dev",
            "prod",
            "dev",
        ]
        assert all(r.labels["fleetbus.io/sim"] == "true" for r in registered.values())
        assert all(r.certificate_fingerprint for r in registered.values())
        await eventually(
            lambda: {"edge-sim-1", "edge-sim-2", "edge-sim-3"} <= leaf_names(hub.server),
            what="three leaf nodes",
        )
        for name in ("sim-1", "sim-3"):
            await hub.write_desired(cluster_task(name, sample_taskset("web")))
        await eventually(
            lambda: "web" in sim_of(hub, "sim-1").applied and "web" in sim_of(hub, "sim-3").applied,
            what="apply on sim-1 and sim-3",
        )
        assert sim_of(hub, "sim-2").applied == {}


async def test_a_large_simulated_fleet_connects_as_clients_with_per_cluster_rights(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path, sim_clusters=22) as hub:
        registered = await registrations(hub)
        assert len(registered) == 22
        assert all(r.labels[edges.CONNECTION_LABEL] == edges.CLIENT for r in registered.values())
        assert leaf_names(hub.server) == set()
        await hub.write_desired(cluster_task("sim-21", sample_taskset("web")))
        await eventually(lambda: "web" in sim_of(hub, "sim-21").applied, what="apply on sim-21")

        async def reported() -> bool:
            return any(
                origin == "sim-21" and isinstance(event, TaskApplied)
                for origin, event, _ in await hub.reports()
            )

        await eventually(reported, what="sim-21's report in REPORTS, published on its own subject")

        # sim-1's credentials reach sim-1's durable only.
        nc = await connect(
            hub.server.client_url,
            credentials=client_credentials(
                hub.data.nats_authority().account(FLEET_ACCOUNT), "sim-1", now=time.time()
            ),
            inbox_prefix=edges.inbox_prefix("sim-1"),
        )
        try:
            own = await nc.request("$JS.hub.API.CONSUMER.INFO.DESIRED.edge-sim-1", b"", timeout=2)
            assert orjson.loads(own.data)["name"] == "edge-sim-1"
            with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
                await nc.request("$JS.hub.API.CONSUMER.INFO.DESIRED.edge-sim-2", b"", timeout=1)
        finally:
            await nc.close()


async def test_a_client_cluster_reports_only_under_its_own_name(tmp_path: Path) -> None:
    async with edge_hub(tmp_path, sim_clusters=22) as hub:
        nc = await connect(
            hub.server.client_url,
            credentials=client_credentials(
                hub.data.nats_authority().account(FLEET_ACCOUNT), "sim-1", now=time.time()
            ),
            inbox_prefix=edges.inbox_prefix("sim-1"),
        )
        try:
            claims_sim_2 = TaskApplied(
                id=new_event_id(),
                occurred_at=datetime.now(UTC),
                actor="cluster:sim-2",
                cluster="sim-2",
                taskset="web",
                generation=7,
            )
            body = encode_event(claims_sim_2)
            # On sim-2's subject: refused by the server, nothing stored.
            with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
                await nc.request(
                    "fleet.report.sim-2.web", body, timeout=1, headers={"Nats-Msg-Id": "x-1"}
                )
            # On its own subject it is stored, and it counts as sim-1's, whatever it claims.
            ack = await nc.request(
                "fleet.report.sim-1.web", body, timeout=5, headers={"Nats-Msg-Id": "x-2"}
            )
            assert orjson.loads(ack.data)["stream"] == "REPORTS"
        finally:
            await nc.close()
        stored = [
            (origin, headers.get("Nats-Msg-Id"))
            for origin, event, headers in await hub.reports()
            if event.id == claims_sim_2.id
        ]
        assert stored == [("sim-1", "x-2")]
