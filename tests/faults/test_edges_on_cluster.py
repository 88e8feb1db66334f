"""Edges join a hub whose NATS is a 3-node cluster: any node, failover, revocation on every node.

A real `fleetbus up --nats-url n1,n2,n3 --replicas 3` process runs on three nats-server
processes (operator mode, a TLS leafnode listener each, from the hub's data dir). Clusters are
registered through the hub's API by the CLI, as a user does; each bundle lists every node's
leaf URL; real edges (leaf nats-server + connector, simulated cluster) join. Killing the node an
edge is on moves it to another node with nothing lost; removing a cluster drops its leaf and
refuses its credentials on all three nodes, with no node's config touched.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from events.streams import DESIRED_STREAM, EVENTS_STREAM, LEASES_STREAM, REPORTS_STREAM
from fleetbus.bundle import EdgeBundle, EdgeSettings, leaf_config, read_edge_bundle
from fleetbus.datadir import DataDir
from fleetbus.edge import EdgeRuntime, EdgeState
from fleetbus.local import open_local_store
from fleetbus.natsserver import NatsServer, free_port
from simulator.executor import SimExecutor
from tests.eventually import eventually
from tests.faults.harness import REPO, record_figures
from tests.faults.nats_cluster import NatsCluster
from tests.faults.test_hub_on_cluster import FLEETBUS, hub_answers

EXAMPLES = REPO / "examples"


@dataclass
class ClusterHub:
    root: Path
    cluster: NatsCluster
    hub: subprocess.Popen[bytes]
    http_port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "hub"

    def fleetbus(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FLEETBUS, *argv, "--data-dir", str(self.data_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def register(self, name: str) -> EdgeBundle:
        out = self.root / "bundles" / name
        done = await asyncio.to_thread(
            self.fleetbus, "cluster", "register", name, "--out", str(out)
        )
        assert done.returncode == 0, done.stderr
        return read_edge_bundle(out)

    def leafs(self, index: int) -> list[dict[str, Any]]:
        """Node `index`'s own leaf connections (nothing if it is down)."""
        node = self.cluster.nodes[index]
        if not node.running():
            return []
        url = f"http://127.0.0.1:{node.monitor_port}/leafz"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return list(orjson.loads(reply.read()).get("leafs") or [])
        except OSError:
            return []

    def nodes_with_leaf(self, name: str) -> list[int]:
        return [
            index
            for index in range(len(self.cluster.nodes))
            if any(leaf.get("name") == name for leaf in self.leafs(index))
        ]

    def applied(self, taskset: str) -> set[str]:
        done = self.fleetbus("status", taskset, "-o", "json")
        if done.returncode != 0:
            return set()
        return {
            str(row["cluster"])
            for row in json.loads(done.stdout)["status"]
            if row.get("state") in ("applied", "ready", "Applied", "Ready")
        }


def start_hub(root: Path, cluster: NatsCluster, http_port: int) -> subprocess.Popen[bytes]:
    """`fleetbus up` on the cluster, as a user runs it."""
    with (root / "hub.log").open("wb") as log:
        return subprocess.Popen(
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(root / "hub"),
                "--http",
                f"127.0.0.1:{http_port}",
                "--nats-url",
                ",".join(cluster.urls),
                "--replicas",
                "3",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
async def cluster_hub(tmp_path: Path) -> AsyncIterator[ClusterHub]:
    cluster = NatsCluster(tmp_path / "cluster", DataDir(tmp_path / "hub"))
    hub: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(cluster.start)
        http_port = free_port()
        hub = await asyncio.to_thread(start_hub, tmp_path, cluster, http_port)
        await hub_answers(hub, f"http://127.0.0.1:{http_port}/healthz", tmp_path / "hub.log")
        yield ClusterHub(tmp_path, cluster, hub, http_port)
    finally:
        if hub is not None and hub.poll() is None:
            hub.terminate()
            try:
                hub.wait(20)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait(10)
        await asyncio.to_thread(cluster.stop)


async def start_edge(hub: ClusterHub, bundle: EdgeBundle, sim: SimExecutor) -> EdgeRuntime:
    return await EdgeRuntime.leaf(
        bundle, EdgeState(hub.root / "edges" / bundle.cluster), sim, inventory_interval=0.5
    )


def publish(hub: ClusterHub, name: str, cluster: str) -> None:
    done = hub.fleetbus(
        "publish", str(EXAMPLES / "yaml" / "status-board"), "--name", name, "--cluster", cluster
    )
    assert done.returncode == 0, done.stderr


async def test_an_edge_joins_any_node_survives_losing_it_and_a_revoked_one_is_refused_everywhere(
    cluster_hub: ClusterHub,
) -> None:
    hub = cluster_hub
    info = orjson.loads((hub.data_dir / "hub.json").read_bytes())
    assert info["leaf_urls"] == hub.cluster.leaf_urls

    store = await open_local_store(hub.data_dir)
    try:
        # LEASES too: the scheduler's lease outlives the node it was written on.
        for stream in (EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM, LEASES_STREAM):
            assert (await store.stream_info(stream))["config"]["num_replicas"] == 3
    finally:
        await store.close()

    alpha_bundle = await hub.register("alpha")
    assert alpha_bundle.settings.hub_urls == hub.cluster.leaf_urls
    sim = SimExecutor(name="alpha")
    alpha = await start_edge(hub, alpha_bundle, sim)
    try:
        await eventually(
            lambda: len(hub.nodes_with_leaf("edge-alpha")) == 1, what="alpha's leaf on one node"
        )
        publish(hub, "board", "alpha")
        await eventually(lambda: "board" in sim.applied, what="alpha applies board", within=60)

        # Kill the node alpha's leaf is on: it reconnects to another, nothing is lost.
        [on] = hub.nodes_with_leaf("edge-alpha")
        hub.cluster.nodes[on].kill()
        killed_at = time.monotonic()
        await eventually(
            lambda: bool(hub.nodes_with_leaf("edge-alpha")),
            what="alpha's leaf on another node",
            within=60,
        )
        moved_after = time.monotonic() - killed_at
        [now_on] = hub.nodes_with_leaf("edge-alpha")
        assert now_on != on
        await asyncio.to_thread(hub.fleetbus, "events", "-o", "json")
        publish(hub, "board-2", "alpha")
        await eventually(
            lambda: "board-2" in sim.applied, what="alpha applies board-2 after the loss", within=90
        )
        await eventually(
            lambda: {"alpha"} <= hub.applied("board") and {"alpha"} <= hub.applied("board-2"),
            what="both reports reached the hub",
            within=90,
        )
        # The killed node comes back and catches up (its resolver too).
        await asyncio.to_thread(hub.cluster.nodes[on].start, 60.0)

        # A second cluster, then removed: dropped and refused on all three nodes.
        beta_bundle = await hub.register("beta")
        beta = await start_edge(hub, beta_bundle, SimExecutor(name="beta"))
        try:
            await eventually(
                lambda: len(hub.nodes_with_leaf("edge-beta")) == 1, what="beta's leaf connected"
            )
            configs = [node.config_path.read_bytes() for node in hub.cluster.nodes]
            removed = await asyncio.to_thread(hub.fleetbus, "cluster", "rm", "beta")
            assert removed.returncode == 0, removed.stderr
            removed_at = time.monotonic()
            await eventually(
                lambda: hub.nodes_with_leaf("edge-beta") == [], what="beta's leaf dropped"
            )
            dropped_after = time.monotonic() - removed_at
        finally:
            await beta.stop()
        assert [node.config_path.read_bytes() for node in hub.cluster.nodes] == configs
        for index, url in enumerate(hub.cluster.leaf_urls):
            await refused_on(hub, beta_bundle, index, url)
        # alpha, still registered, is still connected.
        assert len(hub.nodes_with_leaf("edge-alpha")) == 1
    finally:
        await alpha.stop()
    record_figures(
        "edges on a 3-node hub cluster",
        leaf_moved_after_node_kill_s=round(moved_after, 2),
        revoked_leaf_dropped_after_s=round(dropped_after, 2),
        nodes=3,
    )


async def refused_on(hub: ClusterHub, bundle: EdgeBundle, index: int, url: str) -> None:
    """A leaf with the removed cluster's certificate and credentials, pointed at node `index`
    only, is refused there."""
    root = hub.root / "refused" / f"node-{index}"
    root.mkdir(parents=True)
    settings = EdgeSettings(cluster=bundle.cluster, hub_urls=[url])
    monitor = free_port()
    (root / "leaf.conf").write_text(
        leaf_config(
            settings,
            port=free_port(),
            monitor_port=monitor,
            store_dir=root / "js",
            connector_password="x",
            ca_file=bundle.ca_file,
            cert_file=bundle.cert_file,
            key_file=bundle.key_file,
            creds_file=bundle.creds_file,
        )
    )
    leaf = NatsServer(
        config_path=root / "leaf.conf",
        client_url="nats://unused",
        monitor_port=monitor,
        log_path=root / "nats.log",
    )
    node_log = hub.cluster.nodes[index].log_path

    def refusals() -> int:
        return node_log.read_text(errors="replace").count("authentication error")

    before = refusals()
    await asyncio.to_thread(leaf.start)
    try:

        def refused() -> bool:
            return refusals() > before

        await eventually(refused, what=f"node {index + 1} refusing the removed cluster")
        assert not any(leaf.get("name") == "edge-beta" for leaf in hub.leafs(index))
    finally:
        await asyncio.to_thread(leaf.stop)
