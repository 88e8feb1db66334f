"""A cluster that goes silent and comes back is recorded in the log, so notifications tell it.

A real hub nats-server with its edge services (the health watch among them) and a real leaf
edge in front of a simulated cluster; the edge is stopped and started again.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from events.catalog import ClusterHealthChanged
from events.store import EventStore
from tests.eventually import eventually, eventually_value
from tests.integration.edge_harness import edge_hub


async def health_events(store: EventStore, cluster: str) -> list[ClusterHealthChanged]:
    return [
        stored.event
        async for stored in store.read(subject=f"fleet.evt.cluster.{cluster}")
        if isinstance(stored.event, ClusterHealthChanged)
    ]


async def test_a_cluster_that_goes_silent_is_recorded_unhealthy_then_healthy_again(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        watch = hub.services.health
        watch.offline_after = timedelta(seconds=2)
        watch.settle = timedelta(seconds=3)
        watch.interval_s = 0.2
        bundle = await hub.register("alpha")
        edge = await hub.start_edge(bundle)
        await eventually(
            lambda: "alpha" in hub.services.antientropy.last_seen, "alpha's first digest"
        )
        assert await health_events(hub.store, "alpha") == [], "a healthy start is no news"

        await hub.stop_edge(edge)
        (down,) = await eventually_value(
            lambda: health_events(hub.store, "alpha"),
            "alpha recorded offline",
            lambda events: len(events) == 1,
            within=30,
        )
        assert (down.healthy, down.connected) == (False, False)
        assert "no inventory digest for" in down.reason
        assert down.last_seen is not None
        assert down.actor == "hub:cluster-health"

        await hub.start_edge(bundle)
        events = await eventually_value(
            lambda: health_events(hub.store, "alpha"),
            "alpha recorded healthy again",
            lambda events: len(events) == 2,
            within=30,
        )
        up = events[1]
        assert (up.healthy, up.connected, up.edge_ready) == (True, True, True)
        assert up.reason == "connected, connector ready"

        # A restarted hub reads what it recorded and does not say it again.
        fresh = type(watch)(
            hub.store,
            last_seen=lambda: hub.services.antientropy.last_seen,
            edge_status=lambda: hub.services.antientropy.edge_status,
            registered=lambda: ["alpha"],
            settle=timedelta(0),
        )
        assert await fresh.check() == []
