"""A hub and two edges over mutual TLS: desired state goes down, reports come back."""

from __future__ import annotations

from pathlib import Path

import msgspec

from events.catalog import TaskApplied
from fleetbus.bundle import EdgeBundle
from simulator.executor import SimExecutor
from tests.eventually import eventually
from tests.integration.edge_harness import (
    cluster_task,
    edge_hub,
    sample_taskset,
)


async def test_two_edges_apply_their_own_desired_state_and_the_hub_sees_both_reports(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle_a = await hub.register("alpha")
        bundle_b = await hub.register("beta")
        sim_a, sim_b = SimExecutor(name="alpha"), SimExecutor(name="beta")
        await hub.start_edge(bundle_a, executor=sim_a)
        await hub.start_edge(bundle_b, executor=sim_b)
        web = sample_taskset("web")
        await hub.write_desired(cluster_task("alpha", web, generation=1))
        await hub.write_desired(cluster_task("beta", web, generation=3))

        await eventually(lambda: "web" in sim_a.applied and "web" in sim_b.applied, what="apply")
        assert sim_a.applied["web"].generation == 1
        assert sim_b.applied["web"].generation == 3

        async def both_reported() -> bool:
            origins = {
                (origin, event.generation)
                for origin, event, _ in await hub.reports()
                if isinstance(event, TaskApplied)
            }
            return {("alpha", 1), ("beta", 3)} <= origins

        await eventually(both_reported, what="TaskApplied from both edges in REPORTS")


async def test_phases_run_in_order_and_a_tombstone_runs_pre_delete_then_deletes(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("alpha")
        sim = SimExecutor(name="alpha")
        await hub.start_edge(bundle, executor=sim)
        web = sample_taskset("web")
        await hub.write_desired(cluster_task("alpha", web, generation=1))
        await eventually(lambda: "web" in sim.applied, what="apply")
        phases = [r.phase for r in sim.history if r.action == "apply"]
        assert phases == ["init", "install", "install", "postInstall"]
        assert [r.action for r in sim.history][-1] == "job"

        await hub.write_desired(cluster_task("alpha", web, generation=2, removed=True))
        await eventually(lambda: "web" not in sim.applied, what="removal")
        assert sim.owned_objects("web") == []
        removal = sim.history[len(phases) + 1 :]
        assert (removal[0].phase, removal[0].action) == ("preDelete", "run")
        assert all(r.action == "delete" for r in removal[1:])

        async def removal_reported() -> bool:
            return any(
                isinstance(event, TaskApplied) and event.removed and origin == "alpha"
                for origin, event, _ in await hub.reports()
            )

        await eventually(removal_reported, what="the removal's TaskApplied in REPORTS")


async def test_an_edge_behind_an_http_proxy_can_join_over_websocket_leafnodes(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path, ws=True) as hub:
        bundle = await hub.register("alpha")
        settings = msgspec.structs.replace(
            bundle.settings, hub_urls=[f"wss://127.0.0.1:{hub.ws_port}"]
        )
        over_ws = EdgeBundle(root=bundle.root, settings=settings)
        sim = SimExecutor(name="alpha")
        await hub.start_edge(over_ws, executor=sim)
        await hub.write_desired(cluster_task("alpha", sample_taskset("web")))
        await eventually(lambda: "web" in sim.applied, what="apply over a WebSocket leaf")

        async def reported() -> bool:
            return any(
                isinstance(event, TaskApplied) and origin == "alpha"
                for origin, event, _ in await hub.reports()
            )

        await eventually(reported, what="the report over the WebSocket leaf")


async def test_an_edge_can_pull_its_hub_durable_consumer_instead_of_its_mirror(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("alpha", desired_source="durable")
        sim = SimExecutor(name="alpha")
        await hub.start_edge(bundle, executor=sim)
        await hub.write_desired(cluster_task("alpha", sample_taskset("web")))
        await hub.write_desired(cluster_task("alpha", sample_taskset("db")))
        await eventually(lambda: {"web", "db"} <= set(sim.applied), what="apply from the durable")

        async def all_acknowledged() -> bool:
            info = await hub.store.api_request("CONSUMER.INFO.DESIRED.edge-alpha")
            return bool(info["num_ack_pending"] == 0 and info["num_pending"] == 0)

        await eventually(all_acknowledged, what="the durable to be acknowledged")


async def test_a_durable_pull_hands_over_a_new_task_without_waiting_for_its_poll_to_expire(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("alpha", desired_source="durable")
        sim = SimExecutor(name="alpha")
        await hub.start_edge(bundle, executor=sim)

        async def long_poll_open() -> bool:
            info = await hub.store.api_request("CONSUMER.INFO.DESIRED.edge-alpha")
            return bool(info.get("num_waiting", 0) >= 1)

        await eventually(long_poll_open, what="the edge's long poll")
        await hub.write_desired(cluster_task("alpha", sample_taskset("web")))
        # The poll lasts a minute; the task must not wait for it to run out.
        await eventually(lambda: "web" in sim.applied, within=30.0, what="apply mid-poll")
