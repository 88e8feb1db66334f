"""`fleetbus up --sim-clusters N --sim-processes K`: simulated clusters in worker processes.

The hub registers and provisions every simulated cluster, K child processes run them; a
published taskset reaches every cluster and comes back as reports, and neither Ctrl-C nor a
killed hub leaves a worker behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.catalog import TaskApplied
from events.store import EventStore, connect
from events.streams import REPORTS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.natsserver import free_port
from tests.eventually import eventually_value, wait_until
from tests.processes import nats_servers_under, pids_where

FLEETBUS = [sys.executable, "-m", "fleetbus.cli"]
BOARD = Path(__file__).resolve().parents[2] / "examples" / "yaml" / "status-board"
CLUSTERS = 12


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def sim_workers_of(hub_pid: int) -> list[int]:
    return pids_where(
        lambda pid, cmdline: b"fleetbus.simworker" in cmdline and parent_of(pid) == hub_pid
    )


class SimHub:
    def __init__(self, data_dir: Path) -> None:
        self.data = DataDir(data_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.workers: list[int] = []

    def start(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(self.data.root),
                "--http",
                f"127.0.0.1:{free_port()}",
                "--nats-port",
                str(free_port()),
                "--leaf-port",
                str(free_port()),
                "--leaf-host",
                "127.0.0.1",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process
        wait_until(
            lambda: self.data.hub_json.exists() or process.poll() is not None,
            "hub ready",
            within=120,
        )
        assert process.poll() is None, "fleetbus up exited while starting"
        self.workers = sim_workers_of(process.pid)

    def fleetbus(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FLEETBUS, *args, "--data-dir", str(self.data.root)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def applied(self, taskset: str) -> Counter[str]:
        """How many TaskApplied for `taskset` each cluster has in the hub's REPORTS stream."""
        info = self.data.read_hub_info()
        nc = await connect(str(info["nats_url"]), credentials=self.data.hub_credentials)
        reports = EventStore(nc, stream=REPORTS_STREAM)
        found: Counter[str] = Counter()
        try:
            last = await reports.last_sequence()
            if last:
                async for stored in reports.read(skip_undecodable=True):
                    event = stored.event
                    if isinstance(event, TaskApplied) and event.taskset == taskset:
                        found[event.cluster] += 1
                    if stored.seq >= last:
                        break
        finally:
            await nc.close()
        return found


async def wait_applied(hub: SimHub, *, times: int, clusters: int = CLUSTERS) -> None:
    """Until every sim-1..sim-`clusters` has applied the board `times` times (in REPORTS)."""
    expected = {f"sim-{i}" for i in range(1, clusters + 1)}
    await eventually_value(
        lambda: hub.applied("board"),
        f"{sorted(expected)} to have applied the board {times} times",
        lambda applied: all(applied[name] >= times for name in expected),
        within=90,
        interval=0.3,
    )


@pytest.fixture
def sim_hub(tmp_path: Path) -> Iterator[SimHub]:
    hub = SimHub(tmp_path / "data")
    yield hub
    if hub.process is not None and hub.process.poll() is None:
        hub.process.kill()
        hub.process.wait(10)
    for pid in [*hub.workers, *nats_servers_under(hub.data.root)]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_sims_in_worker_processes_apply_a_published_taskset_and_stop_with_the_hub(
    sim_hub: SimHub,
) -> None:
    sim_hub.start("--sim-clusters", str(CLUSTERS), "--sim-processes", "2")
    assert sim_hub.process is not None
    assert len(sim_hub.workers) == 2
    assert sim_hub.process.pid not in sim_hub.workers
    published = sim_hub.fleetbus(
        "publish", str(BOARD), "--name", "board", "--selector", "fleetbus.io/sim=true"
    )
    assert published.returncode == 0, published.stderr
    await wait_applied(sim_hub, times=1)

    sim_hub.process.send_signal(signal.SIGINT)
    assert sim_hub.process.wait(60) == 0
    assert [pid for pid in sim_hub.workers if alive(pid)] == []
    assert nats_servers_under(sim_hub.data.root) == []


async def test_the_sims_of_a_restarted_hub_get_their_whole_desired_state_again(
    sim_hub: SimHub,
) -> None:
    sim_hub.start("--sim-clusters", "4", "--sim-processes", "2")
    assert sim_hub.process is not None
    published = sim_hub.fleetbus(
        "publish", str(BOARD), "--name", "board", "--selector", "fleetbus.io/sim=true"
    )
    assert published.returncode == 0, published.stderr
    await wait_applied(sim_hub, times=1, clusters=4)
    sim_hub.process.send_signal(signal.SIGINT)
    assert sim_hub.process.wait(60) == 0
    sim_hub.start("--sim-clusters", "4", "--sim-processes", "2")
    await wait_applied(sim_hub, times=2, clusters=4)


def test_a_killed_hub_takes_its_sim_workers_with_it(sim_hub: SimHub) -> None:
    sim_hub.start("--sim-clusters", "4", "--sim-processes", "2")
    assert sim_hub.process is not None
    assert len(sim_hub.workers) == 2
    sim_hub.process.kill()
    sim_hub.process.wait(10)
    wait_until(
        lambda: not any(alive(pid) for pid in sim_hub.workers),
        "workers exit after the hub",
        within=30,
    )


@pytest.mark.parametrize(
    ("processes", "message"),
    [
        ("0", "--sim-processes must be at least 1, not 0"),
        ("-2", "--sim-processes must be at least 1, not -2"),
        ("13", "--sim-processes 13 is more than --sim-clusters 12"),
    ],
)
def test_an_impossible_number_of_sim_processes_is_one_clear_error(
    sim_hub: SimHub, processes: str, message: str
) -> None:
    result = subprocess.run(
        [
            *FLEETBUS,
            "up",
            "--data-dir",
            str(sim_hub.data.root),
            "--http",
            f"127.0.0.1:{free_port()}",
            "--nats-port",
            str(free_port()),
            "--sim-clusters",
            "12",
            "--sim-processes",
            processes,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fleetbus: error: {message}")
    assert nats_servers_under(sim_hub.data.root) == []


async def test_a_hub_without_its_own_scheduler_schedules_only_once_a_scheduler_process_runs(
    sim_hub: SimHub,
) -> None:
    sim_hub.start("--sim-clusters", "3", "--no-scheduler")
    published = sim_hub.fleetbus(
        "publish", str(BOARD), "--name", "board", "--selector", "fleetbus.io/sim=true"
    )
    assert published.returncode == 0, published.stderr
    # Nobody schedules: the sims stay empty (the publish is in the log, nothing is decided).
    await asyncio.sleep(3.0)
    assert await sim_hub.applied("board") == Counter()

    scheduler = await asyncio.create_subprocess_exec(
        *FLEETBUS,
        "scheduler",
        "--data-dir",
        str(sim_hub.data.root),
        "--holder",
        "outside",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_applied(sim_hub, times=1, clusters=3)
    finally:
        scheduler.send_signal(signal.SIGINT)
        await asyncio.wait_for(scheduler.wait(), 30)
