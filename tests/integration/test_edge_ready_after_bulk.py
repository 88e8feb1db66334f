"""After a burst of desired state, the edge's log ends on ready, as the hub hears it.

A real hub nats-server with its edge services and a real leaf nats-server with the connector
(simulator executor). The connector turns not ready while it reads a burst of tasksets and
ready again once caught up. Digests sent on a change are coalesced (`min_send_gap`), so the
digest asked for when it turned not ready may go out once it is ready again: the log tells
what the hub was told, so it does not end on a "not ready" that the edge got over.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from events.inventory import EdgeStatus
from tests.eventually import eventually
from tests.integration.edge_harness import EdgeHub, cluster_task, edge_hub, sample_taskset

CLUSTER = "burst"
TASKSETS = 60


async def heard(hub: EdgeHub) -> EdgeStatus | None:
    return hub.services.antientropy.edge_status.get(CLUSTER)


def readiness_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edge_connector.connector" and "readiness" in r.getMessage()
    ]


async def test_the_log_tells_the_edge_ready_again_after_a_burst_of_tasksets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_connector.connector")
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register(CLUSTER)
        edge = await hub.start_edge(bundle)
        connector = edge.connector
        # Readiness checked often enough to see the burst being read; digests sent on a
        # change coalesced over 3 s, longer than the burst takes to read.
        connector.settings = dataclasses.replace(
            connector.settings, readiness_check_interval=0.02, min_send_gap=3.0
        )

        async def hub_hears_ready() -> bool:
            status = await heard(hub)
            return status is not None and status.ready

        await eventually(hub_hears_ready, "the hub hears the edge ready", within=20)
        changes_seen = 0
        send_now = connector.send_inventory_now

        def counted() -> None:
            nonlocal changes_seen
            changes_seen += 1
            send_now()

        connector.send_inventory_now = counted  # type: ignore[method-assign]

        for index in range(TASKSETS):
            await hub.write_desired(cluster_task(CLUSTER, sample_taskset(f"app-{index:03d}")))
        await eventually(lambda: len(connector.held) == TASKSETS, "every taskset held")

        async def ready_everywhere() -> bool:
            ready, _, _ = await connector.readiness()
            status = await heard(hub)
            lines = readiness_lines(caplog)
            return (
                ready
                and status is not None
                and status.ready
                and bool(lines)
                and lines[-1].startswith("edge readiness told to the hub: connector ready")
            )

        await eventually(
            ready_everywhere, "the edge ready: itself, at the hub, in its log", within=20
        )
        # The burst did turn it not ready for a moment (a digest was asked for at once).
        assert changes_seen > 0
