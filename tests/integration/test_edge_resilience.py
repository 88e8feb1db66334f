"""Edges keep working without the hub, and converge again: store-and-forward and anti-entropy."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import orjson

from events.catalog import AntiEntropyRepaired, DriftCorrected, DriftDetected, TaskApplied
from events.codec import EventDecoder
from fleetbus.bundle import read_edge_bundle
from fleetbus.edge import EdgeRuntime
from simulator.executor import SimExecutor
from tests.eventually import eventually
from tests.integration.edge_harness import (
    EdgeHub,
    cluster_task,
    edge_hub,
    sample_taskset,
)

DEPLOYMENT = "Deployment/apps/web"


async def outbox_ids(runtime: EdgeRuntime) -> list[str]:
    """Event ids in the edge's own outbox, read on the edge (the hub may be down)."""
    info = orjson.loads(
        (await runtime.nc.request("$JS.API.STREAM.INFO.REPORTS-alpha", b"", timeout=5)).data
    )
    decoder = EventDecoder()
    ids = []
    for seq in range(int(info["state"]["first_seq"] or 1), int(info["state"]["last_seq"]) + 1):
        reply = await runtime.nc.request(
            "$JS.API.DIRECT.GET.REPORTS-alpha", orjson.dumps({"seq": seq}), timeout=5
        )
        if not (reply.headers or {}).get("Status"):
            ids.append(decoder.decode(reply.data).id)
    return ids


async def applied_web(hub: EdgeHub) -> tuple[EdgeRuntime, SimExecutor]:
    bundle = await hub.register("alpha")
    sim = SimExecutor(name="alpha")
    runtime = await hub.start_edge(bundle, executor=sim)
    await hub.write_desired(cluster_task("alpha", sample_taskset("web", replicas=2)))
    await eventually(lambda: "web" in sim.applied, what="apply")
    return runtime, sim


async def test_reports_written_while_the_hub_is_down_arrive_exactly_once_after_it_returns(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        runtime, sim = await applied_web(hub)
        await eventually(lambda: runtime.connector.reported >= 1, what="first report")

        hub.server.kill()
        for replicas in (5, 6, 7):
            sim.edit(DEPLOYMENT, "/spec/replicas", replicas)
            # The edge corrects drift from its last desired state with the hub away.
            await eventually(
                lambda: sim.objects[DEPLOYMENT].manifest["spec"]["replicas"] == 2,
                what="drift corrected during the outage",
            )
        sim.delete("ConfigMap/apps/web-config")
        await eventually(
            lambda: "ConfigMap/apps/web-config" in sim.objects, what="deleted object restored"
        )
        await eventually(lambda: runtime.connector.reported >= 9, what="reports in the outbox")
        written = await outbox_ids(runtime)
        assert len(written) == len(set(written)) >= 9

        await hub.restart_server()

        async def all_arrived() -> bool:
            arrived = {event.id for origin, event, _ in await hub.reports() if origin == "alpha"}
            return set(written) <= arrived

        await eventually(all_arrived, within=45, what="every outbox report in REPORTS")
        reports = [(o, e) for o, e, _ in await hub.reports() if o == "alpha"]
        counts = Counter(event.id for _, event in reports)
        assert all(counts[event_id] == 1 for event_id in written)
        assert max(counts.values()) == 1
        kinds = Counter(type(event).__name__ for _, event in reports)
        assert kinds[DriftDetected.__name__] == 4
        assert kinds[DriftCorrected.__name__] == 4
        assert kinds[TaskApplied.__name__] >= 1


async def test_a_connector_restarted_during_an_outage_reapplies_from_its_local_mirror(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        runtime, _ = await applied_web(hub)
        bundle_dir = hub.root / "bundles" / "alpha"
        await hub.stop_edge(runtime)
        hub.server.kill()
        fresh = SimExecutor(name="alpha")  # the cluster lost everything too
        await hub.start_edge(read_edge_bundle(bundle_dir), executor=fresh)
        await eventually(lambda: "web" in fresh.applied, what="re-apply without the hub")
        assert fresh.applied["web"].generation == 1
        await hub.restart_server()


async def test_anti_entropy_repairs_a_cluster_whose_desired_state_was_lost_at_the_edge(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path, settle=0.2, cooldown=0.5) as hub:
        runtime, _ = await applied_web(hub)
        # The edge loses its copy of the desired state and its cluster is rebuilt empty.
        purge = orjson.loads(
            (await runtime.nc.request("$JS.API.STREAM.PURGE.DESIRED-alpha", b"", timeout=5)).data
        )
        assert purge.get("success") is True, purge
        bundle_dir = hub.root / "bundles" / "alpha"
        await hub.stop_edge(runtime)
        fresh = SimExecutor(name="alpha")
        restarted = await hub.start_edge(read_edge_bundle(bundle_dir), executor=fresh)
        assert restarted.connector.held == {}

        await eventually(lambda: "web" in fresh.applied, within=30, what="anti-entropy repair")

        async def repaired() -> list[AntiEntropyRepaired]:
            return [
                stored.event
                async for stored in hub.store.read(subject="fleet.evt.cluster.alpha")
                if isinstance(stored.event, AntiEntropyRepaired)
            ]

        events = await repaired()
        assert [e.tasksets for e in events] == [["web"]]
        assert events[0].edge_digest != events[0].hub_digest


async def test_a_connector_restarted_with_a_wiped_local_state_converges(tmp_path: Path) -> None:
    async with edge_hub(tmp_path) as hub:
        runtime, _ = await applied_web(hub)
        await hub.write_desired(cluster_task("alpha", sample_taskset("db")))
        bundle_dir = hub.root / "bundles" / "alpha"
        state = hub.root / "edges" / "alpha"
        await hub.stop_edge(runtime)
        shutil.rmtree(state)
        fresh = SimExecutor(name="alpha")
        await hub.start_edge(read_edge_bundle(bundle_dir), state=state, executor=fresh)
        await eventually(lambda: {"web", "db"} <= set(fresh.applied), within=30, what="convergence")
