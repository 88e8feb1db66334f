"""`fleetbus nats-node`: node configs an operator renders, and a cluster that runs from them.

Three configs rendered by the CLI from one hub data dir (one shared route password), three real
nats-servers started from them: they form a JetStream cluster that trusts the hub's operator,
the hub's own user stores replicated streams on it, and every node offers a TLS leafnode
listener. Bad options are one clear error and write nothing.
"""

from __future__ import annotations

import asyncio
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from events.store import EventStore, connect
from events.streams import EVENTS_STREAM, hub_streams
from fleetbus.cli import main
from fleetbus.datadir import DataDir
from fleetbus.natsserver import NatsServer, free_port


def render_nodes(tmp_path: Path, data_dir: Path) -> list[NatsServer]:
    (tmp_path / "route.pw").write_text("routes0secret\n")
    routes = [free_port() for _ in range(3)]
    servers = []
    for index in range(3):
        port, monitor, leaf = free_port(), free_port(), free_port()
        home = tmp_path / f"n{index + 1}"
        out = tmp_path / f"n{index + 1}.conf"
        code = main(
            [
                "nats-node",
                "--data-dir",
                str(data_dir),
                "--name",
                f"hub-{index + 1}",
                "--home",
                str(home),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--monitor-port",
                str(monitor),
                "--cluster-port",
                str(routes[index]),
                "--leaf-port",
                str(leaf),
                "--routes",
                ",".join(f"127.0.0.1:{p}" for p in routes),
                "--route-password-file",
                str(tmp_path / "route.pw"),
                "--out",
                str(out),
            ]
        )
        assert code == 0
        assert out.stat().st_mode & 0o077 == 0
        servers.append(
            NatsServer(
                config_path=out,
                client_url=f"nats://127.0.0.1:{port}",
                monitor_port=monitor,
                log_path=tmp_path / f"n{index + 1}.log",
            )
        )
    return servers


def monitor(server: NatsServer, endpoint: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.monitor_port}/{endpoint}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        answer: dict[str, Any] = orjson.loads(reply.read())
    return answer


async def test_three_rendered_nodes_form_a_cluster_the_hub_stores_its_log_on(
    tmp_path: Path,
) -> None:
    data = DataDir(tmp_path / "hub")
    servers = await asyncio.to_thread(render_nodes, tmp_path, data.root)
    text = servers[0].config_path.read_text()
    # The only password is the routes'; no user is in the config.
    assert text.count("password") == 1
    assert "users:" not in text
    assert "operator:" in text
    assert "verify: true" in text
    try:
        with ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(server.start, 60.0) for server in servers]:
                await asyncio.wrap_future(future)
        nc = await connect([s.client_url for s in servers], credentials=data.hub_credentials)
        store = EventStore(nc)
        try:
            await store.ensure_streams(hub_streams(3))
            info = await store.stream_info(EVENTS_STREAM)
            assert info["config"]["num_replicas"] == 3
            assert len(info["cluster"]["replicas"]) == 2
        finally:
            await store.close()
        for server in servers:
            varz = await asyncio.to_thread(monitor, server, "varz")
            assert varz["leaf"]["port"] > 0
            assert varz["leaf"]["tls_required"] is True
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["--routes", "n1"], "a route is HOST:PORT"),
        (["--routes", "n1:70000"], "a route is HOST:PORT"),
        (["--port", "0"], "a port is 1 to 65535"),
        (["--route-password-file", "{missing}"], "No such file"),
        (["--route-password-file", "{bad}"], "no '@'"),
        (["--name", "Hub_1"], "node"),
    ],
)
def test_a_bad_option_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expect: str
) -> None:
    (tmp_path / "pw").write_text("good\n")
    (tmp_path / "bad").write_text("a@b\n")
    places = {"{missing}": str(tmp_path / "nope"), "{bad}": str(tmp_path / "bad")}
    base = {
        "--name": "hub-1",
        "--home": str(tmp_path / "home"),
        "--routes": "n1:6222",
        "--route-password-file": str(tmp_path / "pw"),
        "--out": str(tmp_path / "out.conf"),
        "--data-dir": str(tmp_path / "hub"),
    }
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        base[flag] = places.get(value, value)
    try:
        code = main(["nats-node", *[part for pair in base.items() for part in pair]])
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert expect in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.conf").exists()
