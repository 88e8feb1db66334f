"""`fleetbus up --nats-url ... --replicas 3`: the hub on a 3-node cluster keeps serving after a
node is killed.

The hub runs as a user runs it (a real `fleetbus up` process) against three nats-server
processes rendered from `infra/nats/cluster-node.conf.tmpl` with the passwords of the hub's data
dir. Killing the node that leads EVENTS must not stop the hub, the CLI, or appends.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from events.catalog import ClusterRegistered
from events.ids import new_event_id
from events.streams import DESIRED_STREAM, EVENTS_STREAM, REPORTS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.local import open_local_store
from fleetbus.natsserver import free_port
from tests.eventually import eventually
from tests.faults.append_writer import append_until_acknowledged
from tests.faults.harness import REPO, record_figures
from tests.faults.nats_cluster import NatsCluster

FLEETBUS = [sys.executable, "-m", "fleetbus.cli"]


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


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a hub process as an operator would (SIGTERM), killing it if it does not stop."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def hub_answers(hub: subprocess.Popen[bytes], health: str, log_path: Path) -> None:
    """Wait for the hub's /healthz; a hub that exits or never answers fails with its log."""

    def answering() -> bool:
        if hub.poll() is not None:
            raise AssertionError(f"the hub exited with code {hub.returncode}")
        return healthy(health)

    try:
        await eventually(answering, "the hub answering /healthz", within=90, interval=0.1)
    except AssertionError as e:
        tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-4000:]
        raise AssertionError(f"{e}\nthe hub's log:\n{tail}") from None


@pytest.fixture
def cluster_hub(tmp_path: Path) -> Iterator[tuple[NatsCluster, subprocess.Popen[bytes], int]]:
    data_dir = tmp_path / "hub"
    cluster = NatsCluster(tmp_path / "cluster", DataDir(data_dir))
    hub: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        http_port = free_port()
        log = (tmp_path / "hub.log").open("wb")
        hub = subprocess.Popen(
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(data_dir),
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
        log.close()
        yield cluster, hub, http_port
    finally:
        if hub is not None and hub.poll() is None:
            hub.kill()
            hub.wait(10)
        cluster.stop()


async def test_the_hub_on_a_three_node_cluster_keeps_serving_after_a_node_is_killed(
    cluster_hub: tuple[NatsCluster, subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    cluster, hub, http_port = cluster_hub
    rng = random.Random(2718)
    health = f"http://127.0.0.1:{http_port}/healthz"
    await hub_answers(hub, health, tmp_path / "hub.log")
    data_dir = tmp_path / "hub"
    info = orjson.loads((data_dir / "hub.json").read_bytes())
    assert info["nats_urls"] == cluster.urls

    store = await open_local_store(data_dir)
    try:
        for stream in (EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM):
            assert (await store.stream_info(stream))["config"]["num_replicas"] == 3
        before = rng.randint(20, 60)
        for index in range(before):
            await store.append([registered(f"before-{index}")], expected=0)
        leader = (await store.stream_info())["cluster"]["leader"]
        cluster.nodes[cluster.index_of(leader)].kill()
        killed_at = time.monotonic()
        after = rng.randint(20, 60)
        retried = 0
        failover_s = 0.0
        for index in range(after):
            # A leader election outlasts the store's own retries: the caller retries the same
            # command (same event id), as every hub service does.
            _, attempts = await append_until_acknowledged(
                store, [registered(f"after-{index}")], 0, time.monotonic() + 30
            )
            retried += attempts - 1
            if index == 0:
                failover_s = time.monotonic() - killed_at
        assert (await store.stream_info())["cluster"]["leader"] != leader
        assert hub.poll() is None, "the hub process died with the node"
        assert healthy(health)
    finally:
        await store.close()

    # The CLI reads the hub's data dir and fails over past the dead node.
    result = await asyncio.to_thread(
        subprocess.run,
        [*FLEETBUS, "events", "-o", "json", "--data-dir", str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    clusters = [row["event"]["cluster"] for row in json.loads(result.stdout)]
    assert clusters == [f"before-{i}" for i in range(before)] + [f"after-{i}" for i in range(after)]
    record_figures(
        "R3 hub on a 3-node cluster",
        seed=2718,
        killed=f"EVENTS leader {leader}",
        appended_before_kill=before,
        appended_after_kill=after,
        failover_s=round(failover_s, 2),
        append_attempts_retried=retried,
        faults_injected=1,
        events_lost=0,
    )


def registered(cluster: str) -> ClusterRegistered:
    return ClusterRegistered(
        id=new_event_id(), occurred_at=datetime.now(UTC), actor="user:test", cluster=cluster
    )


def test_replicas_above_one_on_the_embedded_single_server_is_a_clear_error(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            *FLEETBUS,
            "up",
            "--data-dir",
            str(tmp_path / "hub"),
            "--http",
            f"127.0.0.1:{free_port()}",
            "--nats-port",
            str(free_port()),
            "--replicas",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "replicas" in result.stderr
    assert "Traceback" not in result.stderr
