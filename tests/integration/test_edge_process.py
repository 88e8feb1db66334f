"""`fleetbus edge` as a real process: what it listens on, and what it loads."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from events.catalog import TaskApplied
from fleetbus.natsserver import free_port
from tests.eventually import eventually
from tests.integration.edge_harness import (
    cluster_task,
    edge_hub,
    leaf_names,
    sample_taskset,
)

REPO = Path(__file__).resolve().parents[2]

HUB_ONLY_MODULES = (
    "helm_python",
    "litestar",
    "aiosqlite",
    "uvicorn",
    "scheduler",
    "projector",
    "api",
    "normalizer",
)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in (Path("/proc") / str(pid) / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening_addresses(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by `pids` (/proc/net/tcp*)."""
    inodes = set().union(*(socket_inodes(pid) for pid in pids))
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:
                continue
            address_hex, port_hex = local.split(":")
            assert len(address_hex) == width
            raw = bytes.fromhex(address_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
            address = b"".join(words)
            if width == 8:
                text = ".".join(str(b) for b in address)
            else:
                text = ":".join(address[i : i + 2].hex() for i in range(0, 16, 2))
            found.append((text, int(port_hex, 16)))
    return found


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "0000:0000:0000:0000:0000:0000:0000:0001"


async def test_the_edge_processes_listen_on_loopback_only(tmp_path: Path) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("alpha")
        health_port = free_port()
        log_path = tmp_path / "edge.log"
        output = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fleetbus.edge",
            "--bundle",
            str(bundle.root),
            "--sim",
            "--state-dir",
            str(tmp_path / "edge-state"),
            f"--health-addr=127.0.0.1:{health_port}",
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            await eventually(lambda: "edge-alpha" in leaf_names(hub.server), what="the leaf")
            await hub.write_desired(cluster_task("alpha", sample_taskset("web")))

            async def applied() -> bool:
                return any(
                    isinstance(event, TaskApplied) and origin == "alpha"
                    for origin, event, _ in await hub.reports()
                )

            await eventually(applied, what="the edge process to apply and report")
            pids = process_tree(process.pid)
            assert len(pids) >= 2, "the connector and its leaf nats-server"
            listening = listening_addresses(pids)
            assert listening, "the leaf nats-server listens for its local clients"
            assert all(is_loopback(address) for address, _ in listening), listening
            assert ("127.0.0.1", health_port) in listening, "the probes, on loopback"

            def ready() -> bool:
                url = f"http://127.0.0.1:{health_port}/readyz"
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        return int(response.status) == 200
                except OSError:
                    return False

            async def ready_now() -> bool:
                return await asyncio.to_thread(ready)

            await eventually(ready_now, what="the edge ready")
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                await process.wait()
            output.close()
        assert process.returncode == 0
        # Everything it wrote is one JSON log record per line, its start and stop included.
        records = [json.loads(line) for line in log_path.read_text().splitlines()]
        messages = [r["msg"] for r in records if r["logger"] == "fleetbus.edge"]
        assert messages[0].startswith("fleetbus edge up: cluster alpha"), messages
        assert messages[-1] == "fleetbus edge stopped"


def test_the_edge_entry_point_loads_no_hub_code() -> None:
    probe = (
        "import sys\n"
        "import fleetbus.edge\n"
        "import fleetbus.cli as cli\n"
        'cli.build_parser("edge")\n'
        f"loaded = [m for m in {HUB_ONLY_MODULES!r} + ('lightkube',) if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
