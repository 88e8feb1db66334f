"""How a leaf edge reads its link to the hub for readiness, checked every second: cheaply.

A real hub nats-server with its edge services and a real leaf nats-server with the connector
(simulator executor). Readiness asks the leaf's `/leafz` over one kept connection, and its
mirror's stream info only when something may have changed it: the connector read something,
the last answer said it was behind, or a slow interval passed.
"""

from __future__ import annotations

from pathlib import Path

from edge_connector.jetstream import MIRROR_POSITIONS_EVERY_S, LeafHubLink
from fleetbus.edge import EdgeRuntime
from tests.eventually import eventually
from tests.integration.edge_harness import cluster_task, edge_hub, sample_taskset


async def _ready(edge: EdgeRuntime) -> bool:
    ready, _, _ = await edge.connector.readiness()
    return ready


async def test_readiness_asks_the_mirror_only_when_something_may_have_changed(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("beta")
        edge = await hub.start_edge(bundle)
        link = edge.hub_link
        assert isinstance(link, LeafHubLink)
        now = [1000.0]
        link.clock = lambda: now[0]
        await hub.write_desired(cluster_task("beta", sample_taskset("web")))
        await eventually(lambda: "web" in edge.connector.held, "the taskset held")
        await eventually(lambda: _ready(edge), "the edge ready")

        # Caught up and nothing read since: the checks of the next seconds ask the leaf's
        # /leafz, over the same connection, and not the mirror.
        asked = link.stream_info_asked
        kept = link._monitor_link
        assert kept is not None
        for _ in range(5):
            now[0] += 1.0
            assert await _ready(edge)
        assert link.stream_info_asked == asked
        assert link._monitor_link is kept

        # The slow interval passed: asked once more.
        now[0] += MIRROR_POSITIONS_EVERY_S
        assert await _ready(edge)
        assert link.stream_info_asked == asked + 1

        # The connector read a new desired state: the next check asks at once.
        seen = edge.connector.delivered_seq
        await hub.write_desired(cluster_task("beta", sample_taskset("api")))
        await eventually(lambda: edge.connector.delivered_seq > seen, "the new state read")
        await eventually(lambda: _ready(edge), "the edge ready again")
        assert link.stream_info_asked >= asked + 2
        state = await link.state()
        assert state.connected
        assert state.mirror_last_seq == edge.connector.delivered_seq

        # A monitoring connection the leaf closed is opened again, within the same check.
        assert link._monitor_link is not None
        link._monitor_link[1].close()
        assert (await link.state()).connected
        assert link._monitor_link is not None
        assert link._monitor_link is not kept

        # Cut from the hub: told by the very next check, however recently the mirror was asked.
        hub.server.kill()
        await eventually(
            lambda: _not_connected(link), "the link seen down at the next check", within=10
        )
        assert not await _ready(edge)


async def _not_connected(link: LeafHubLink) -> bool:
    return not (await link.state()).connected
