"""Two API processes of one hub on a 3-node NATS cluster: `fleetbus up --nats-url ...
--replicas 3` and `fleetbus api --nats-url ...`, each with its own data dir and read models.

A token made through one works on the other at once; a cluster registered through the API
process is listed by the hub's, and the bundle it issued lets the edge join; with the hub's
process killed, the other keeps answering (its tokens, its clusters, new registrations, a
publish), a CLI given both URLs finds it, and a standby `fleetbus scheduler` given every node's
URL takes the lease and schedules what was published.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events.port import JetStreamPort
from events.streams import DESIRED_STREAM, LEASES_STREAM
from events.tasks import cancel_and_wait
from fleetbus.api_replica import prepare_replica_dir
from fleetbus.bundle import read_edge_bundle
from fleetbus.datadir import DataDir
from fleetbus.local import open_local_store
from fleetbus.natsserver import free_port
from scheduler.bus import LEASE_SUBJECT
from simulator.executor import SimExecutor
from tests.eventually import eventually
from tests.faults.harness import REPO, record_figures
from tests.faults.nats_cluster import NatsCluster
from tests.faults.test_edges_on_cluster import EXAMPLES, ClusterHub, start_edge, start_hub
from tests.faults.test_hub_on_cluster import FLEETBUS, hub_answers, stop


def start_api(hub: ClusterHub, http_port: int) -> subprocess.Popen[bytes]:
    """`fleetbus api` beside the hub, its data dir prepared from the hub's, as a user runs it."""
    with (hub.root / "api-b.log").open("wb") as log:
        return subprocess.Popen(
            [
                *FLEETBUS,
                "api",
                "--data-dir",
                str(hub.root / "api-b"),
                "--from-data-dir",
                str(hub.data_dir),
                "--keys-dir",
                str(hub.data_dir / "keys"),
                "--http",
                f"127.0.0.1:{http_port}",
                "--nats-url",
                ",".join(hub.cluster.urls),
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def start_standby_scheduler(hub: ClusterHub) -> subprocess.Popen[bytes]:
    """`fleetbus scheduler` given every node's URL, waiting for the hub's scheduler's lease."""
    with (hub.root / "scheduler.log").open("wb") as log:
        return subprocess.Popen(
            [
                *FLEETBUS,
                "scheduler",
                "--data-dir",
                str(hub.data_dir),
                "--nats-url",
                ",".join(hub.cluster.urls),
                "--holder",
                "standby",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def lease_holder(hub: ClusterHub) -> str:
    store = await open_local_store(hub.data_dir)
    try:
        reply = await JetStreamPort(store.api).last_message(LEASES_STREAM, LEASE_SUBJECT)
    finally:
        await store.close()
    return "" if reply is None else str(reply.json().get("holder", ""))


async def desired_written(hub: ClusterHub, cluster: str, taskset: str) -> bool:
    store = await open_local_store(hub.data_dir)
    try:
        reply = await JetStreamPort(store.api).last_message(
            DESIRED_STREAM, f"fleet.desired.{cluster}.{taskset}"
        )
    finally:
        await store.close()
    return reply is not None


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLEETBUS, *argv], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def whoami(url: str, token: str) -> dict[str, Any] | int:
    request = urllib.request.Request(
        f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer: dict[str, Any] = json.loads(reply.read())
            return answer
    except urllib.error.HTTPError as e:
        return e.code


def stream_ticket(url: str, token: str) -> str:
    request = urllib.request.Request(
        f"{url}/api/v1/stream-tickets",
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return str(json.loads(reply.read())["ticket"])


def stream_opens(url: str, ticket: str) -> int:
    """The status of the live event stream opened with `ticket` (then closed at once)."""
    query = urllib.parse.urlencode({"ticket": ticket})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/events/stream?{query}", timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as e:
        return e.code


def listed(url: str, token: str) -> set[str]:
    done = cli("cluster", "ls", "-o", "json", "--server", url, "--token", token)
    if done.returncode != 0:
        return set()
    rows = json.loads(done.stdout)
    rows = rows.get("clusters", rows) if isinstance(rows, dict) else rows
    return {str(row["name"]) for row in rows}


@pytest.fixture
async def two_apis(
    tmp_path: Path,
) -> AsyncIterator[tuple[ClusterHub, subprocess.Popen[bytes], str]]:
    cluster = NatsCluster(tmp_path / "cluster", DataDir(tmp_path / "hub"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.to_thread(cluster.start)
        http_port = free_port()
        up = await asyncio.to_thread(start_hub, tmp_path, cluster, http_port)
        processes.append(up)
        await hub_answers(up, f"http://127.0.0.1:{http_port}/healthz", tmp_path / "hub.log")
        hub = ClusterHub(tmp_path, cluster, up, http_port)
        api_port = free_port()
        api = await asyncio.to_thread(start_api, hub, api_port)
        processes.append(api)
        url = f"http://127.0.0.1:{api_port}"
        await hub_answers(api, f"{url}/healthz", tmp_path / "api-b.log")
        yield hub, api, url
    finally:
        for process in processes:
            await asyncio.to_thread(stop, process)
        await asyncio.to_thread(cluster.stop)


async def test_two_api_processes_share_tokens_and_clusters_and_one_serves_when_the_other_dies(
    two_apis: tuple[ClusterHub, subprocess.Popen[bytes], str],
) -> None:
    hub, api, url_b = two_apis
    url_a = f"http://127.0.0.1:{hub.http_port}"
    admin_a = (hub.data_dir / "admin.token").read_text().strip()
    admin_b = (hub.root / "api-b" / "admin.token").read_text().strip()
    assert admin_a != admin_b, "each process keeps the admin token of its own data dir"
    api_log = (hub.root / "api-b.log").read_text()
    assert "copied creds/hub.creds, creds/sys.creds, keys/ from" in api_log
    # The CA and the NATS operator came from JetStream, sealed, not from a copy.
    assert "took the hub's pki/ca.crt, pki/ca.key, nats-auth.json from JetStream" in api_log
    for name in ("pki/ca.crt", "pki/ca.key"):
        assert (hub.root / "api-b" / name).read_bytes() == (hub.data_dir / name).read_bytes()
    authority = json.loads((hub.root / "api-b" / "nats-auth.json").read_text())
    assert (
        authority["operator"]
        == json.loads((hub.data_dir / "nats-auth.json").read_text())["operator"]
    )
    info = json.loads((hub.root / "api-b" / "hub.json").read_text())
    assert info["role"] == "api"
    assert info["nats_urls"] == hub.cluster.urls

    # A token made through the hub's API works on the other process at once.
    made = await asyncio.to_thread(
        cli, "token", "create", "--role", "admin", "--name", "ops", "--server", url_a,
        "--token", admin_a,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    ops = made.stdout.splitlines()[-1]
    assert ops not in (await asyncio.to_thread((hub.root / "api-b.log").read_text))
    seen = await asyncio.to_thread(whoami, url_b, ops)
    assert isinstance(seen, dict), f"the other API refused the token: {seen}"
    assert (seen["name"], seen["role"]) == ("ops", "admin")
    # A stream ticket issued by one opens the live event stream on the other.
    ticket = await asyncio.to_thread(stream_ticket, url_a, ops)
    assert await asyncio.to_thread(stream_opens, url_b, ticket) == 200
    assert await asyncio.to_thread(stream_opens, url_b, ticket + "x") == 401
    revoked = await asyncio.to_thread(
        cli, "token", "create", "--role", "viewer", "--name", "gone", "--server", url_b,
        "--token", admin_b,
    )  # fmt: skip
    gone = revoked.stdout.splitlines()[-1]
    assert isinstance(await asyncio.to_thread(whoami, url_a, gone), dict)
    done = await asyncio.to_thread(
        cli, "token", "revoke", "gone", "--server", url_b, "--token", admin_b
    )
    assert done.returncode == 0, done.stderr
    assert await asyncio.to_thread(whoami, url_a, gone) == 401, "revoked on one, refused on both"

    # A cluster registered through the second process: the hub's lists it, its edge joins.
    out = hub.root / "bundles" / "east"
    registered = await asyncio.to_thread(
        cli, "cluster", "register", "east", "--out", str(out), "--server", url_b, "--token", ops
    )
    assert registered.returncode == 0, registered.stderr
    bundle = read_edge_bundle(out)
    assert bundle.settings.hub_urls == hub.cluster.leaf_urls
    await eventually(
        lambda: "east" in listed(url_a, ops), what="the hub's API lists east", within=30
    )
    sim = SimExecutor(name="east")
    edge = await start_edge(hub, bundle, sim)
    standby = await asyncio.to_thread(start_standby_scheduler, hub)
    takeover: asyncio.Task[float] | None = None
    try:
        await eventually(
            lambda: len(hub.nodes_with_leaf("edge-east")) == 1,
            what="east's leaf, with the bundle the second process issued, on a node",
            within=60,
        )
        assert (await lease_holder(hub)).startswith("hub-scheduler ")
        assert not await desired_written(hub, "east", "board")

        # The hub's process dies: the other keeps answering, a CLI given both finds it, and
        # the standby scheduler takes the lease.
        hub.hub.kill()
        await asyncio.to_thread(hub.hub.wait, 10)
        killed_at = time.monotonic()

        async def holds() -> bool:
            return await lease_holder(hub) == "standby"

        async def standby_leads() -> float:
            await eventually(holds, what="the standby scheduler holds the lease", within=60)
            return time.monotonic() - killed_at

        # Timed from the kill, beside the steps below.
        takeover = asyncio.create_task(standby_leads())
        seen = await asyncio.to_thread(whoami, url_b, ops)
        assert isinstance(seen, dict)
        assert seen["name"] == "ops"
        both = f"{url_a},{url_b}"
        assert "east" in await asyncio.to_thread(listed, both, ops)
        west = await asyncio.to_thread(
            cli, "cluster", "register", "west", "--out", str(hub.root / "bundles" / "west"),
            "--server", both, "--token", ops,
        )  # fmt: skip
        assert west.returncode == 0, west.stderr
        registered_after = time.monotonic() - killed_at
        await eventually(
            lambda: {"east", "west"} <= listed(url_b, ops), what="west listed by the survivor"
        )
        took_over_after = await takeover
        # Published through the survivor, scheduled by the standby: east's desired state.
        published = await asyncio.to_thread(
            cli, "publish", str(EXAMPLES / "yaml" / "status-board"), "--name", "board",
            "--cluster", "east", "--server", both, "--token", ops,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        await eventually(
            lambda: desired_written(hub, "east", "board"),
            what="the standby scheduler writes east's desired state",
            within=60,
        )
        scheduled_after = time.monotonic() - killed_at
        assert api.poll() is None, "the second API process is still running"
    finally:
        if takeover is not None:
            await cancel_and_wait([takeover])
        await edge.stop()
        await asyncio.to_thread(stop, standby)
    record_figures(
        "two API processes on a 3-node hub cluster",
        survivor_registered_a_cluster_after_s=round(registered_after, 2),
        standby_scheduler_took_the_lease_after_s=round(took_over_after, 2),
        published_through_survivor_scheduled_after_s=round(scheduled_after, 2),
        nodes=3,
    )


def start_second_up(hub: ClusterHub, http_port: int) -> subprocess.Popen[bytes]:
    """`fleetbus up` on the same cluster with a copy of the hub's data dir (another host)."""
    with (hub.root / "up-b.log").open("ab") as log:
        return subprocess.Popen(
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(hub.root / "up-b"),
                "--http",
                f"127.0.0.1:{http_port}",
                "--nats-url",
                ",".join(hub.cluster.urls),
                "--replicas",
                "3",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.long
@pytest.mark.timeout(600)
async def test_a_second_up_on_the_cluster_is_refused_and_takes_over_once_the_first_is_killed(
    two_apis: tuple[ClusterHub, subprocess.Popen[bytes], str],
) -> None:
    hub, _, _ = two_apis
    prepare_replica_dir(DataDir(hub.data_dir), DataDir(hub.root / "up-b"))
    port = free_port()
    second = await asyncio.to_thread(start_second_up, hub, port)
    try:
        code = await asyncio.to_thread(second.wait, 60)
        assert code != 0
        log = (hub.root / "up-b.log").read_text()
        assert "another `fleetbus up` runs this hub:" in log
        assert str(hub.data_dir.resolve()) in log, "the holder is named"
        assert "Traceback" not in log
        assert hub.hub.poll() is None, "the first hub runs on"

        hub.hub.kill()
        await asyncio.to_thread(hub.hub.wait, 10)
        killed_at = time.monotonic()
        second = await asyncio.to_thread(start_second_up, hub, port)
        await hub_answers(second, f"http://127.0.0.1:{port}/healthz", hub.root / "up-b.log")
        took_over_after = time.monotonic() - killed_at
        # Its data dir had only the NATS logins and the keyring: the CA and the operator came
        # from JetStream, the same as the first hub's.
        for name in ("pki/ca.crt", "pki/ca.key"):
            assert (hub.root / "up-b" / name).read_bytes() == (hub.data_dir / name).read_bytes()
    finally:
        await asyncio.to_thread(stop, second)
    record_figures(
        "a second hub process on a 3-node cluster", took_over_after_s=round(took_over_after, 2)
    )
