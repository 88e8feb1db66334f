"""`fleetbus up` as a user runs it: a real process tree, stopped by a signal, resumed from disk."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetbus.natsserver import free_port
from tests.eventually import wait_until
from tests.processes import nats_servers_under

FLEETBUS = [sys.executable, "-m", "fleetbus.cli"]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Hub:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.nats_port = free_port()
        self.process: subprocess.Popen[str] | None = None

    def start(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(self.data_dir),
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--nats-port",
                str(self.nats_port),
                "--leaf-port",
                str(free_port()),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        wait_until(
            lambda: healthy(f"http://127.0.0.1:{self.http_port}/healthz"), "healthz", within=90
        )

    def interrupt(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(30)

    def fleetbus(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FLEETBUS, *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(tmp_path / "data")
    yield hub
    if hub.process is not None and hub.process.poll() is None:
        hub.process.kill()
        hub.process.wait(10)
    for pid in nats_servers_under(hub.data_dir):
        os.kill(pid, signal.SIGKILL)


def nats_varz(data_dir: Path) -> dict[str, object]:
    """The hub nats-server's own /varz, from the monitoring address in its config."""
    config = (data_dir / "nats.conf").read_text()
    address = re.search(r'^http: "([^"]+)"', config, re.M)
    assert address is not None, config
    with urllib.request.urlopen(f"http://{address.group(1)}/varz", timeout=5) as response:
        varz: dict[str, object] = json.load(response)
    return varz


def refused_up(
    data_dir: Path, *extra: str, nats_port: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`fleetbus up` that is expected to refuse to start: how it exited and what it said."""
    return subprocess.run(
        [
            *FLEETBUS,
            "up",
            "--data-dir",
            str(data_dir),
            "--nats-port",
            str(nats_port or free_port()),
            "--http",
            f"127.0.0.1:{free_port()}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def append_cluster(hub: Hub, name: str) -> None:
    code = f"""
import asyncio, datetime
from events.catalog import ClusterRegistered
from events.ids import new_event_id
from fleetbus.local import open_local_store
async def main():
    store = await open_local_store(__import__("pathlib").Path({str(hub.data_dir)!r}))
    now = datetime.datetime.now(datetime.UTC)
    event = ClusterRegistered(id=new_event_id(), occurred_at=now, actor="user:test",
                              cluster={name!r})
    await store.append([event])
    await store.close()
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_up_serves_health_and_ctrl_c_leaves_no_process_behind(hub: Hub) -> None:
    hub.start()
    assert len(nats_servers_under(hub.data_dir)) == 1
    assert (hub.data_dir / "hub.json").exists()
    assert hub.interrupt() == 0
    assert nats_servers_under(hub.data_dir) == []
    assert not (hub.data_dir / "hub.json").exists()


def test_a_second_up_on_the_same_data_dir_resumes_with_every_event(hub: Hub) -> None:
    hub.start()
    append_cluster(hub, "edge-1")
    append_cluster(hub, "edge-2")
    assert hub.interrupt() == 0
    hub.start()
    result = hub.fleetbus("events", "-o", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["event"]["cluster"] for row in rows] == ["edge-1", "edge-2"]
    assert [row["seq"] for row in rows] == [1, 2]
    table = hub.fleetbus("events", "--from-seq", "2")
    assert "ClusterRegistered" in table.stdout
    assert "edge-2" in table.stdout
    assert "edge-1" not in table.stdout
    assert hub.interrupt() == 0


def test_the_embedded_nats_server_runs_under_the_memory_limit_given_also_after_a_restart(
    hub: Hub,
) -> None:
    hub.start("--nats-memory-limit", "700MiB")
    assert nats_varz(hub.data_dir)["gomemlimit"] == 700 * 2**20
    [first] = nats_servers_under(hub.data_dir)
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: [p for p in nats_servers_under(hub.data_dir) if p != first],
        "a new nats-server",
        within=60,
    )
    wait_until(lambda: healthy(f"http://127.0.0.1:{hub.http_port}/healthz"), "healthz", within=60)
    assert nats_varz(hub.data_dir)["gomemlimit"] == 700 * 2**20
    assert hub.interrupt() == 0


def test_without_a_memory_limit_the_embedded_nats_server_has_none(hub: Hub) -> None:
    hub.start()
    # nats-server leaves `gomemlimit` out of /varz when Go runs without a limit.
    limit = nats_varz(hub.data_dir).get("gomemlimit")
    assert limit is None or int(str(limit)) >= 2**62
    assert hub.interrupt() == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--nats-memory-limit", "12XB"], "expected a size like 768MiB or 2GiB"),
        (["--nats-memory-limit", "1MiB"], "1MiB is below the smallest limit"),
        (
            ["--nats-memory-limit", "1GiB", "--nats-url", "nats://127.0.0.1:4222"],
            "--nats-memory-limit applies to the embedded nats-server",
        ),
    ],
)
def test_a_memory_limit_that_cannot_be_applied_is_one_clear_error(
    hub: Hub, extra: list[str], message: str
) -> None:
    result = refused_up(hub.data_dir, *extra)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert nats_servers_under(hub.data_dir) == []


def test_a_taken_port_gets_a_clear_message_and_no_traceback(hub: Hub) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = refused_up(hub.data_dir, nats_port=port)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--nats-port" in result.stderr
    assert "Traceback" not in result.stderr
    assert nats_servers_under(hub.data_dir) == []


def test_a_missing_nats_server_binary_gets_a_clear_message(hub: Hub, tmp_path: Path) -> None:
    result = refused_up(
        hub.data_dir, env={**os.environ, "FLEETBUS_NATS_SERVER": str(tmp_path / "nope")}
    )
    assert result.returncode == 2
    assert "is not an executable file" in result.stderr
    assert "Traceback" not in result.stderr


def test_events_without_a_running_hub_says_how_to_start_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [*FLEETBUS, "events", "--data-dir", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "fleetbus up" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_hubs_scheduler_snapshots_every_n_events_and_snapshot_take_ls_reach_it(
    hub: Hub,
) -> None:
    hub.start("--snapshot-every", "2")
    for name in ("edge-1", "edge-2", "edge-3"):
        append_cluster(hub, name)

    def listed() -> list[dict[str, object]]:
        result = hub.fleetbus("snapshot", "ls", "-o", "json")
        assert result.returncode == 0, result.stderr
        snapshots: list[dict[str, object]] = json.loads(result.stdout)
        return snapshots

    wait_until(lambda: bool(listed()), "the scheduler's snapshot", within=60)
    assert int(str(listed()[0]["eventsSequence"])) >= 2
    taken = hub.fleetbus("snapshot", "take", "-o", "json")
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["eventsSequence"] == 3
    state = hub.fleetbus("state", "--cluster", "edge-3", "-o", "json")
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["registered"] is True
    assert hub.interrupt() == 0
