"""The machine a benchmark ran on: CPU, cores, memory, Python, nats-server, load at the start.

Numbers from different machines are not comparable; this is printed beside every figure so the
reader knows what ours were measured on.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import msgspec

from fleetbus.natsserver import find_nats_server


class MachineInfo(msgspec.Struct, frozen=True, kw_only=True):
    cpu_model: str
    cores: int
    usable_cores: int
    memory_gib: float
    python: str
    nats_server: str
    nats_py: str
    kernel: str
    load_average: tuple[float, float, float]
    commit: str


def parse_cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return "unknown"


def parse_mem_total_gib(meminfo: str) -> float:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1024 * 1024)
    raise ValueError("no MemTotal line in /proc/meminfo")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _command_output(args: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=10, cwd=cwd, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip() or "unknown"


def collect(repo: Path) -> MachineInfo:
    from importlib.metadata import version

    meminfo = _read("/proc/meminfo")
    load = os.getloadavg()
    return MachineInfo(
        cpu_model=parse_cpu_model(_read("/proc/cpuinfo")),
        cores=os.cpu_count() or 0,
        usable_cores=len(os.sched_getaffinity(0)),
        memory_gib=round(parse_mem_total_gib(meminfo), 1) if meminfo else 0.0,
        python=platform.python_version(),
        nats_server=_command_output([str(find_nats_server()), "--version"]),
        nats_py=version("nats-py"),
        kernel=platform.release(),
        load_average=(round(load[0], 2), round(load[1], 2), round(load[2], 2)),
        commit=_command_output(["git", "rev-parse", "--short", "HEAD"], cwd=repo),
    )
