"""The connector's probes: ready when connected to the hub and caught up, not ready when cut off.

A real hub nats-server with its edge services and a real leaf nats-server with the connector;
the probes are served over HTTP on loopback the way `fleetbus edge --health-addr` serves them.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from events.inventory import EdgeStatus
from fleetbus.errors import ServerFailed
from fleetbus.probes import ProbeServer, fleetbus_version
from tests.eventually import eventually, eventually_value
from tests.integration.edge_harness import cluster_task, edge_hub, sample_taskset


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()


async def probe(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, url)


async def test_a_connector_cut_from_the_hub_turns_not_ready_and_ready_again_when_it_is_back(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("alpha")
        edge = await hub.start_edge(bundle)
        probes = edge.probe_server("127.0.0.1", 0)
        await probes.start()
        try:
            await hub.write_desired(cluster_task("alpha", sample_taskset("web")))
            await eventually(lambda: "web" in edge.connector.held, "the taskset held")
            ready = await eventually_value(
                lambda: probe(f"{probes.url}/readyz"), "the connector ready", lambda a: a[0] == 200
            )
            assert "caught up" in ready[1]
            assert edge.connector.delivered_seq >= 1
            assert (await probe(f"{probes.url}/healthz"))[0] == 200
            metrics = (await probe(f"{probes.url}/metrics"))[1]
            assert "fleetbus_edge_ready 1" in metrics
            assert "fleetbus_edge_hub_connected 1" in metrics
            assert "fleetbus_edge_tasksets_held 1" in metrics
            assert f'fleetbus_edge_info{{cluster="alpha",version="{fleetbus_version()}"}} 1' in (
                metrics
            )

            # The hub tells each edge's version and readiness from its inventory digests.
            status = await eventually_value(
                lambda: _edge_status(hub.services.antientropy.edge_status, "alpha"),
                "alpha's connector status at the hub",
                lambda s: s.ready,
            )
            assert status.version == fleetbus_version()

            hub.server.kill()
            cut = await eventually_value(
                lambda: probe(f"{probes.url}/readyz"),
                "the connector not ready once cut from the hub",
                lambda a: a[0] == 503,
            )
            assert "not connected to the hub" in cut[1]
            assert (await probe(f"{probes.url}/healthz"))[0] == 200, "cut off is not dead"
            assert "fleetbus_edge_hub_connected 0" in (await probe(f"{probes.url}/metrics"))[1]

            await hub.restart_server()
            await eventually_value(
                lambda: probe(f"{probes.url}/readyz"),
                "the connector ready again with the hub back",
                lambda a: a[0] == 200,
            )
            # A desired state written now is read before the connector says it is caught up.
            await hub.write_desired(cluster_task("alpha", sample_taskset("api")))
            await eventually(lambda: "api" in edge.connector.held, "the new taskset held")
            answer = await probe(f"{probes.url}/readyz")
            assert answer[0] == 200, answer
        finally:
            await probes.stop()


async def test_the_probe_server_answers_only_its_paths_and_methods(tmp_path: Path) -> None:
    async with edge_hub(tmp_path) as hub:
        edge = await hub.start_edge(await hub.register("beta"))
        probes = edge.probe_server("127.0.0.1", 0)
        await probes.start()
        try:
            assert (await probe(f"{probes.url}/nothing"))[0] == 404
            request = urllib.request.Request(f"{probes.url}/readyz", method="POST")

            def post() -> int:
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        return int(response.status)
                except urllib.error.HTTPError as e:
                    return int(e.code)

            assert await asyncio.to_thread(post) == 405
        finally:
            await probes.stop()


async def _edge_status(statuses: dict[str, EdgeStatus], cluster: str) -> EdgeStatus | None:
    return statuses.get(cluster)


async def test_a_taken_health_port_is_one_clear_error(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = int(taken.getsockname()[1])

    async def never() -> tuple[bool, str]:
        return False, "unused"

    async def no_metrics() -> str:
        return ""

    try:
        server = ProbeServer("127.0.0.1", port, live=never, ready=never, metrics=no_metrics)
        with pytest.raises(ServerFailed, match=f"127.0.0.1:{port}.*--health-addr"):
            await server.start()
    finally:
        taken.close()
