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
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from events.port import JetStreamPort
from events.store import EventStore, connect
from events.streams import EVENTS_STREAM, LEASES_STREAM
from fleetbus.bundle import read_edge_bundle
from fleetbus.datadir import DataDir
from fleetbus.hub_lease import HUB_LEASE_SUBJECT
from fleetbus.natsserver import free_port
from scheduler.bus import LEASE_SUBJECT
from simulator.executor import SimExecutor
from tests.e2e.test_hub_process import refused_up
from tests.eventually import eventually
from tests.faults.harness import REPO, record_figures
from tests.faults.nats_cluster import NatsCluster
from tests.faults.test_edges_on_cluster import EXAMPLES, ClusterHub, start_edge
from tests.faults.test_hub_on_cluster import FLEETBUS, fleetbus, healthy, hub_answers, stop
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


async def cluster_store(cluster: NatsCluster) -> EventStore:
    """The hub's log as its own user, from the cluster (whichever hub process runs)."""
    return EventStore(await connect(cluster.urls, credentials=cluster.credentials))


async def hub_lease_holder(cluster: NatsCluster) -> str:
    store = await cluster_store(cluster)
    try:
        reply = await JetStreamPort(store.api).last_message(LEASES_STREAM, HUB_LEASE_SUBJECT)
    finally:
        await store.close()
    return "" if reply is None else str(reply.json().get("holder", ""))


async def stream_replicas(cluster: NatsCluster) -> dict[str, int]:
    store = await cluster_store(cluster)
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
    try:
        active_holder = await hub_lease_holder(hub.cluster)
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
        assert await hub_lease_holder(hub.cluster) == active_holder

        hub.hub.kill()
        await asyncio.to_thread(hub.hub.wait, 10)
        killed_at = time.monotonic()

        async def standby_holds() -> bool:
            return str(standby_dir.resolve()) in await hub_lease_holder(hub.cluster)

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
    finally:
        for edge in edges:
            await edge.stop()
        await asyncio.to_thread(stop, standby)
    assert lease_after <= LEASE_TTL_S + 3, f"lease taken {lease_after:.1f} s after the kill"
    record_figures(
        "a hot standby hub on a 3-node cluster",
        lease_ttl_s=LEASE_TTL_S,
        standby_held_the_lease_after_s=round(lease_after, 2),
        standby_served_the_api_after_s=round(serving_after, 2),
        cluster_registered_after_takeover_applied_after_s=round(west_after, 2),
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


def holds(cluster: NatsCluster, process_dir: Path) -> Callable[[], Awaitable[bool]]:
    name = str(process_dir.resolve())

    async def check() -> bool:
        return name in await hub_lease_holder(cluster)

    return check


async def scheduler_lease_holder(cluster: NatsCluster) -> str:
    store = await cluster_store(cluster)
    try:
        reply = await JetStreamPort(store.api).last_message(LEASES_STREAM, LEASE_SUBJECT)
    finally:
        await store.close()
    return "" if reply is None else str(reply.json().get("holder", ""))


def waiting_on(log: Path, holder: str) -> Callable[[], bool]:
    return lambda: f"the hub lease is held by {holder}" in log.read_text()


@pytest.mark.timeout(300)
async def test_a_paused_holder_stops_once_its_lease_is_taken_and_a_released_lease_passes_at_once(
    active_hub: ClusterHub,
) -> None:
    hub = active_hub
    root = hub.root
    active_holder = await hub_lease_holder(hub.cluster)
    from_hub = ("--standby", "--from-data-dir", str(hub.data_dir))
    b_port = free_port()
    b = await asyncio.to_thread(start_up, root, hub.cluster, "b", b_port, *from_hub)
    # With other --replicas than the active hub's: waiting, it must change no stream.
    c = await asyncio.to_thread(
        start_up, root, hub.cluster, "c", free_port(), *from_hub, "--replicas", "1"
    )
    processes = [b, c]
    try:
        await eventually(waiting_on(root / "b.log", active_holder), "b waits", within=60)
        await eventually(waiting_on(root / "c.log", active_holder), "c waits", within=60)
        assert await stream_replicas(hub.cluster) == {"EVENTS": 3, "LEASES": 3}
        # A waiting standby stopped (SIGTERM, as Ctrl-C) exits at once, having started nothing.
        await asyncio.to_thread(c.terminate)
        assert await asyncio.to_thread(c.wait, 15) == 0
        assert "Traceback" not in (root / "c.log").read_text()
        assert not (root / "c" / "hub.json").exists()
        assert await hub_lease_holder(hub.cluster) == active_holder

        # The active process is paused (a frozen VM, a cut network): b takes over.
        hub.hub.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        await eventually(holds(hub.cluster, root / "b"), "b holds the lease", within=60)
        paused_lease_after = time.monotonic() - paused_at
        b_holder = await hub_lease_holder(hub.cluster)
        await hub_answers(b, f"http://127.0.0.1:{b_port}/healthz", root / "b.log")
        await eventually(
            lambda: _is(scheduler_lease_holder(hub.cluster), f"hub-scheduler {b_holder}"),
            what="b's scheduler holds the scheduler lease",
            within=60,
        )
        # Back, the old holder finds its lease taken and stops; it takes nothing back.
        hub.hub.send_signal(signal.SIGCONT)
        code = await asyncio.to_thread(hub.hub.wait, 60)
        assert code != 0
        old_log = (root / "hub.log").read_text()
        assert f"the hub lease was taken by {b_holder}: this hub process stops" in old_log
        assert "Traceback" not in old_log
        assert await hub_lease_holder(hub.cluster) == b_holder
        assert await scheduler_lease_holder(hub.cluster) == f"hub-scheduler {b_holder}"
        assert b.poll() is None

        # A standby of b takes over at once when b stops and releases the lease.
        d = await asyncio.to_thread(start_up, root, hub.cluster, "d", free_port(), *from_hub)
        processes.append(d)
        await eventually(waiting_on(root / "d.log", b_holder), "d waits for b", within=60)
        await asyncio.to_thread(stop, b)
        assert b.returncode == 0, (root / "b.log").read_text()[-3000:]
        assert f"{b_holder} released the hub lease" in (root / "b.log").read_text()
        stopped_at = time.monotonic()
        await eventually(holds(hub.cluster, root / "d"), "d holds the lease", interval=0.1)
        handed_over_after = time.monotonic() - stopped_at
    finally:
        if hub.hub.poll() is None:
            hub.hub.send_signal(signal.SIGCONT)
        for process in processes:
            await asyncio.to_thread(stop, process)
    assert handed_over_after < LEASE_TTL_S / 2, "a released lease is taken at once"
    record_figures(
        "a paused hub process and a hot standby on a 3-node cluster",
        lease_ttl_s=LEASE_TTL_S,
        standby_held_the_lease_after_pause_s=round(paused_lease_after, 2),
        released_lease_taken_after_s=round(handed_over_after, 2),
        nodes=3,
    )


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected
