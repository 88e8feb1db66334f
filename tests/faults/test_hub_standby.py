"""A hot standby hub process on a 3-node NATS cluster: `fleetbus up --standby`.

Two real `fleetbus up --nats-url n1,n2,n3 --replicas 3` processes, as two hosts run them: the
active one with the hub's data dir, the standby with only the NATS logins and the keyring
copied (`--from-data-dir`). While the active one lives, the standby waits for the hub
lease and runs none of the once-per-hub services (one key service and one consumer gate
connect to the cluster, not two) and serves no API. `kill -9` of the active process: the
standby holds the lease within one lease TTL, starts the services, takes the CA and the NATS
operator from JetStream, and answers. A cluster registered before the takeover keeps
receiving its desired state; one registered after it, through the new holder, joins and
receives its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from events.port import JetStreamPort
from events.streams import EVENTS_STREAM, LEASES_STREAM
from fleetbus.bundle import read_edge_bundle
from fleetbus.datadir import DataDir
from fleetbus.hub_lease import HUB_LEASE_SUBJECT
from fleetbus.local import open_local_store
from fleetbus.natsserver import free_port
from simulator.executor import SimExecutor
from tests.e2e.test_hub_process import refused_up
from tests.eventually import eventually
from tests.faults.harness import REPO, record_figures
from tests.faults.nats_cluster import NatsCluster
from tests.faults.test_edges_on_cluster import EXAMPLES, ClusterHub, start_edge
from tests.faults.test_hub_on_cluster import FLEETBUS, healthy, hub_answers
from tests.processes import nats_servers_under

LEASE_TTL_S = 6
ONCE_PER_HUB_CONNECTIONS = ("fleetbus-key-service", "fleetbus-consumer-gate")


def start_up(
    root: Path, cluster: NatsCluster, name: str, http_port: int, *extra: str
) -> subprocess.Popen[bytes]:
    """`fleetbus up` on the cluster with data dir `root/name`, its output in `root/name.log`."""
    with (root / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(root / name),
                "--http",
                f"127.0.0.1:{http_port}",
                "--nats-url",
                ",".join(cluster.urls),
                "--replicas",
                "3",
                "--lease-ttl",
                str(LEASE_TTL_S),
                *extra,
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def fleetbus(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI, finding the hub process (and its admin token) from `data_dir`."""
    return subprocess.run(
        [*FLEETBUS, *argv, "--data-dir", str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def connections_named(cluster: NatsCluster, name: str) -> int:
    """Client connections called `name` over every running node of the cluster."""
    count = 0
    for node in cluster.nodes:
        if not node.running():
            continue
        url = f"http://127.0.0.1:{node.monitor_port}/connz?limit=4096"
        with urllib.request.urlopen(url, timeout=5) as reply:
            connections = orjson.loads(reply.read()).get("connections") or []
        count += sum(1 for connection in connections if connection.get("name") == name)
    return count


def once_per_hub_connections(cluster: NatsCluster) -> dict[str, int]:
    return {name: connections_named(cluster, name) for name in ONCE_PER_HUB_CONNECTIONS}


async def hub_lease_holder(data_dir: Path) -> str:
    store = await open_local_store(data_dir)
    try:
        reply = await JetStreamPort(store.api).last_message(LEASES_STREAM, HUB_LEASE_SUBJECT)
    finally:
        await store.close()
    return "" if reply is None else str(reply.json().get("holder", ""))


async def stream_replicas(data_dir: Path) -> dict[str, int]:
    store = await open_local_store(data_dir)
    try:
        return {
            name: int((await store.stream_info(name))["config"]["num_replicas"])
            for name in (EVENTS_STREAM, LEASES_STREAM)
        }
    finally:
        await store.close()


def applied(data_dir: Path, taskset: str) -> set[str]:
    done = fleetbus(data_dir, "status", taskset, "-o", "json")
    if done.returncode != 0:
        return set()
    return {
        str(row["cluster"])
        for row in json.loads(done.stdout)["status"]
        if row.get("state") in ("applied", "ready", "Applied", "Ready")
    }


def publish(data_dir: Path, name: str, *clusters: str) -> None:
    targets = [arg for cluster in clusters for arg in ("--cluster", cluster)]
    done = fleetbus(
        data_dir, "publish", str(EXAMPLES / "yaml" / "status-board"), "--name", name, *targets
    )
    assert done.returncode == 0, done.stderr


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
async def active_hub(tmp_path: Path) -> AsyncIterator[ClusterHub]:
    cluster = NatsCluster(tmp_path / "cluster", DataDir(tmp_path / "hub"))
    hub: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(cluster.start)
        http_port = free_port()
        hub = await asyncio.to_thread(start_up, tmp_path, cluster, "hub", http_port)
        await hub_answers(hub, f"http://127.0.0.1:{http_port}/healthz", tmp_path / "hub.log")
        yield ClusterHub(tmp_path, cluster, hub, http_port)
    finally:
        if hub is not None:
            await asyncio.to_thread(stop, hub)
        await asyncio.to_thread(cluster.stop)


@pytest.mark.timeout(300)
async def test_a_standby_hub_takes_over_from_a_killed_one_and_serves_old_and_new_clusters(
    active_hub: ClusterHub,
) -> None:
    hub = active_hub
    root = hub.root
    standby_dir = root / "standby"
    standby_port = free_port()
    standby = await asyncio.to_thread(
        start_up, root, hub.cluster, "standby", standby_port, "--standby",
        "--from-data-dir", str(hub.data_dir),
    )  # fmt: skip
    standby_started = time.monotonic()
    standby_log = root / "standby.log"
    edges = []
    spares: list[subprocess.Popen[bytes]] = []
    try:
        active_holder = await hub_lease_holder(hub.data_dir)
        assert str(hub.data_dir.resolve()) in active_holder
        await eventually(
            lambda: f"the hub lease is held by {active_holder}" in standby_log.read_text(),
            what="the standby waiting for the active hub's lease",
            within=60,
        )
        assert "copied creds/hub.creds, creds/sys.creds, keys/ from" in standby_log.read_text()
        # East joins through the active hub and gets its desired state.
        east = await hub.register("east")
        east_sim = SimExecutor(name="east")
        edges.append(await start_edge(hub, east, east_sim))
        publish(hub.data_dir, "board", "east")
        await eventually(
            lambda: "east" in applied(hub.data_dir, "board"),
            what="east applies board from the active hub",
            within=90,
        )
        # Longer than the lease TTL since the standby started waiting: it still waits, with
        # none of the once-per-hub services and no API.
        await asyncio.sleep(max(0.0, standby_started + 2 * LEASE_TTL_S - time.monotonic()))
        assert standby.poll() is None, standby_log.read_text()[-3000:]
        assert once_per_hub_connections(hub.cluster) == dict.fromkeys(ONCE_PER_HUB_CONNECTIONS, 1)
        assert not healthy(f"http://127.0.0.1:{standby_port}/healthz")
        assert not (standby_dir / "hub.json").exists()
        assert not (standby_dir / "pki" / "ca.key").exists(), "no secrets before the lease"
        assert await hub_lease_holder(hub.data_dir) == active_holder

        hub.hub.kill()
        await asyncio.to_thread(hub.hub.wait, 10)
        killed_at = time.monotonic()

        async def standby_holds() -> bool:
            return str(standby_dir.resolve()) in await hub_lease_holder(hub.data_dir)

        await eventually(
            standby_holds, what="the standby holds the hub lease", within=60, interval=0.2
        )
        lease_after = time.monotonic() - killed_at
        await hub_answers(standby, f"http://127.0.0.1:{standby_port}/healthz", standby_log)
        serving_after = time.monotonic() - killed_at
        text = standby_log.read_text()
        assert f"took over the hub from {active_holder} at " in text
        assert "Traceback" not in text
        info = json.loads((standby_dir / "hub.json").read_text())
        assert info["took_over_from"] == active_holder
        assert str(standby_dir.resolve()) in info["hub_lease_holder"]
        for name in ("pki/ca.crt", "pki/ca.key"):
            assert (standby_dir / name).read_bytes() == (hub.data_dir / name).read_bytes()
        await eventually(
            lambda: (
                once_per_hub_connections(hub.cluster) == dict.fromkeys(ONCE_PER_HUB_CONNECTIONS, 1)
            ),
            what="the new holder's key service and consumer gate, alone",
            within=30,
        )

        # East, registered before, keeps receiving desired state, now from the new holder.
        publish(standby_dir, "board-two", "east")
        await eventually(
            lambda: "east" in applied(standby_dir, "board-two"),
            what="east applies what was published after the takeover",
            within=90,
        )
        # West, registered through the new holder, joins and receives its own.
        out = root / "bundles" / "west"
        registered = await asyncio.to_thread(
            fleetbus, standby_dir, "cluster", "register", "west", "--out", str(out)
        )
        assert registered.returncode == 0, registered.stderr
        west_sim = SimExecutor(name="west")
        edges.append(await start_edge(hub, read_edge_bundle(out), west_sim))
        publish(standby_dir, "board-west", "west")
        await eventually(
            lambda: "west" in applied(standby_dir, "board-west"),
            what="west, registered after the takeover, applies its taskset",
            within=90,
        )
        west_after = time.monotonic() - killed_at

        # A standby of the new holder takes over at once when it stops and releases the lease.
        new_holder = await hub_lease_holder(hub.data_dir)
        # (with other --replicas: waiting, it changes no stream)
        third = await asyncio.to_thread(
            start_up, root, hub.cluster, "third", free_port(), "--standby",
            "--from-data-dir", str(hub.data_dir), "--replicas", "1",
        )  # fmt: skip
        spares.append(third)
        await eventually(
            lambda: f"the hub lease is held by {new_holder}" in (root / "third.log").read_text(),
            what="the third process waiting for the new holder's lease",
            within=60,
        )
        assert await stream_replicas(hub.data_dir) == {"EVENTS": 3, "LEASES": 3}
        # A waiting standby stopped (SIGTERM, as Ctrl-C) exits at once, having started nothing.
        fourth = await asyncio.to_thread(
            start_up, root, hub.cluster, "fourth", free_port(), "--standby",
            "--from-data-dir", str(hub.data_dir),
        )  # fmt: skip
        spares.append(fourth)
        await eventually(
            lambda: f"the hub lease is held by {new_holder}" in (root / "fourth.log").read_text(),
            what="the fourth process waiting",
            within=60,
        )
        await asyncio.to_thread(fourth.terminate)
        assert await asyncio.to_thread(fourth.wait, 15) == 0
        assert "Traceback" not in (root / "fourth.log").read_text()
        assert not (root / "fourth" / "hub.json").exists()
        assert await hub_lease_holder(hub.data_dir) == new_holder
        await asyncio.to_thread(stop, standby)
        assert standby.returncode == 0, standby_log.read_text()[-3000:]
        stopped_at = time.monotonic()

        async def third_holds() -> bool:
            return str((root / "third").resolve()) in await hub_lease_holder(hub.data_dir)

        await eventually(third_holds, what="the third holds the lease", within=30, interval=0.1)
        handed_over_after = time.monotonic() - stopped_at
    finally:
        for edge in edges:
            await edge.stop()
        for process in [standby, *spares]:
            await asyncio.to_thread(stop, process)
    assert handed_over_after < LEASE_TTL_S / 2, "a released lease is taken at once"
    assert lease_after <= LEASE_TTL_S + 3, f"lease taken {lease_after:.1f} s after the kill"
    record_figures(
        "a hot standby hub on a 3-node cluster",
        lease_ttl_s=LEASE_TTL_S,
        standby_held_the_lease_after_s=round(lease_after, 2),
        standby_served_the_api_after_s=round(serving_after, 2),
        cluster_registered_after_takeover_applied_after_s=round(west_after, 2),
        released_lease_taken_after_s=round(handed_over_after, 2),
        nodes=3,
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--standby"], "--standby needs --nats-url"),
        (["--lease-ttl", "5"], "--lease-ttl needs --nats-url"),
        (
            ["--lease-ttl", "2", "--nats-url", "nats://127.0.0.1:4222"],
            "argument --lease-ttl: must be a whole number from 3 to 300, got 2",
        ),
        (
            ["--from-data-dir", "/nowhere"],
            "--from-data-dir needs --nats-url",
        ),
        (
            ["--standby", "--nats-url", "nats://127.0.0.1:4222"],
            "lacks creds/hub.creds, creds/sys.creds, keys/: a standby logs in",
        ),
        (
            ["--standby", "--nats-url", "nats://127.0.0.1:4222", "--from-data-dir", "/nowhere"],
            "/nowhere is not a hub's data dir (no creds/hub.creds",
        ),
    ],
)
def test_standby_options_that_cannot_apply_are_one_clear_error(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    result = refused_up(tmp_path / "data", *extra)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert nats_servers_under(tmp_path / "data") == []
    assert not (tmp_path / "data" / "hub.json").exists()
