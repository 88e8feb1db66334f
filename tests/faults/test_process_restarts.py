"""kill -9 of a fleetbus process, then the same command again: it must simply start.

`fleetbus up` and `fleetbus edge` each run a nats-server child in its own session, so a SIGKILL
of the fleetbus process leaves that server running, holding its ports and its JetStream store.
The next start on the same data (or state) dir must take that leftover down and run as one
server again — not fail on a taken port, and not run two servers on one store. A second fleetbus
process on a dir whose owner is alive must instead be refused with a clear message.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from events.catalog import TaskApplied
from tests.eventually import eventually
from tests.faults.components import Component, kill_nats_servers_under
from tests.faults.harness import record_figures
from tests.integration.edge_harness import cluster_task, edge_hub, sample_taskset
from tests.processes import nats_servers_under
from tests.security.live_hub import FLEETBUS, REPO, LiveHub


def test_a_hub_killed_with_kill_9_starts_again_on_its_data_dir(tmp_path: Path) -> None:
    hub = LiveHub(tmp_path / "hub")
    try:
        hub.start()
        registered = hub.cli("cluster", "register", "east", "--data-dir", str(hub.data_dir))
        assert registered.returncode == 0, registered.stderr
        assert hub.process is not None
        hub.process.kill()
        hub.process.wait(10)
        orphans = nats_servers_under(hub.data_dir)
        assert len(orphans) == 1, "the hub's nats-server should outlive a kill -9 of the hub"

        hub.start()
        assert nats_servers_under(hub.data_dir) != orphans
        assert len(nats_servers_under(hub.data_dir)) == 1
        listed = hub.cli("cluster", "ls", "--data-dir", str(hub.data_dir))
        assert listed.returncode == 0, listed.stderr
        assert b"east" in listed.stdout
    finally:
        hub.stop()
        kill_nats_servers_under(hub.data_dir)
    record_figures("kill -9 of fleetbus up, then up again", faults_injected=1, restarted=True)


async def test_an_edge_killed_with_kill_9_comes_back_as_one_leaf_and_applies_again(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path / "hub") as hub:
        await hub.register("alpha", inventory_interval=0.5)
        state = tmp_path / "edge-alpha"
        edge = Component(
            "edge alpha",
            [
                "-m", "fleetbus.cli", "edge",
                "--bundle", str(hub.root / "bundles" / "alpha"),
                "--sim",
                "--state-dir", str(state),
                "--health-addr=127.0.0.1:0",
            ],
            tmp_path / "edge.log",
        )  # fmt: skip
        try:
            edge.start()
            await hub.write_desired(cluster_task("alpha", sample_taskset("web")))

            async def applied_count() -> int:
                return sum(
                    1
                    for origin, event, _ in await hub.reports()
                    if origin == "alpha" and isinstance(event, TaskApplied)
                )

            async def applied_once() -> bool:
                return await applied_count() >= 1

            await eventually(applied_once, "alpha applying web", 60, 0.2)
            first_leaf = nats_servers_under(state)
            assert len(first_leaf) == 1
            edge.kill9()
            assert nats_servers_under(state) == first_leaf, "the leaf outlives its connector"

            edge.start()
            before = await applied_count()

            async def applied_again() -> bool:
                # The simulated cluster lived in the killed process: it is re-applied.
                return await applied_count() > before

            await eventually(applied_again, "alpha applying web again after the restart", 60, 0.2)
            leafs = nats_servers_under(state)
            assert len(leafs) == 1, f"{len(leafs)} leaf nats-servers share one store"
            assert leafs != first_leaf
            assert "Duplicate Remote LeafNode" not in (state / "nats.log").read_text()
        finally:
            edge.stop()
            kill_nats_servers_under(state)


async def test_a_second_edge_on_a_state_dir_in_use_is_refused(tmp_path: Path) -> None:
    async with edge_hub(tmp_path / "hub") as hub:
        await hub.register("alpha")
        state = tmp_path / "edge-alpha"
        argv = [
            "-m", "fleetbus.cli", "edge",
            "--bundle", str(hub.root / "bundles" / "alpha"),
            "--sim",
            "--state-dir", str(state),
            "--health-addr=127.0.0.1:0",
        ]  # fmt: skip
        first = Component("first edge", argv, tmp_path / "first.log")
        try:
            first.start()
            await eventually(
                lambda: "fleetbus edge up" in first.log_text(), "the first edge up", 60, 0.2
            )
            second = await asyncio.to_thread(
                subprocess.run,
                [*FLEETBUS, *argv[2:]],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert second.returncode == 2, second.stderr
            assert "belongs to another running fleetbus process" in second.stderr
            assert "Traceback" not in second.stderr
            assert first.running()
            assert len(nats_servers_under(state)) == 1
        finally:
            first.stop()
            kill_nats_servers_under(state)
