"""One log format for everything `fleetbus up` writes, simulated clusters' workers included.

`--log-format text` (what `make run` uses) and the default JSON are each checked line by line
over a hub with simulated clusters (in a worker process, so its log is checked too) that takes a
registration and a notification subscription.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleetbus.natsserver import free_port
from tests.e2e.test_hub_process import healthy
from tests.eventually import wait_until

FLEETBUS = [sys.executable, "-m", "fleetbus.cli"]
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 (debug|info|warning|error|critical) +[\w.]+: "
)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_line_of_the_hub_has_one_format(log_format: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    http_port = free_port()
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as out:
        hub = subprocess.Popen(
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(data_dir),
                "--http",
                f"127.0.0.1:{http_port}",
                "--nats-port",
                str(free_port()),
                "--leaf-port",
                str(free_port()),
                "--sim-clusters",
                "2",
                "--sim-processes",
                "1",
                "--log-format",
                log_format,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_until(lambda: healthy(f"http://127.0.0.1:{http_port}/healthz"), "healthz", within=90)
        cli = [*FLEETBUS, "cluster", "register", "edge-1", "--data-dir", str(data_dir)]
        assert subprocess.run(cli, capture_output=True, timeout=60, check=False).returncode == 0
    finally:
        hub.send_signal(signal.SIGINT)
        assert hub.wait(60) == 0
    lines = log_path.read_text().splitlines()
    assert any("fleetbus hub up" in line for line in lines)
    assert any("simulated fleet up" in line for line in lines)
    for line in lines:
        if log_format == "json":
            entry = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
        else:
            assert TEXT_LINE.match(line), line
