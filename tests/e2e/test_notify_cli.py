"""`fleetbus notify` against `fleetbus up`, with a receiver on loopback.

A subscription added through the CLI gets a cluster registration as a signed CloudEvent; lists,
status, metrics and the hub's files never show the webhook's URL path or the HMAC key; the
subscription survives a hub restart; bad input is refused with a clear message.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleetbus.natsserver import free_port
from tests.e2e.test_hub_process import Hub, hub
from tests.eventually import wait_until
from tests.integration.test_notifications import SECRET_PATH, Receiver, verify

__all__ = ["hub"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    r.up()
    try:
        yield r
    finally:
        r.down()


def metrics(hub: Hub) -> str:
    token = (hub.data_dir / "admin.token").read_text().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{hub.http_port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def test_notify_add_ls_status_rm_through_the_cli(
    hub: Hub, receiver: Receiver, tmp_path: Path
) -> None:
    hub.start()
    url_file = tmp_path / "url"
    url_file.write_text(receiver.url + "\n")
    added = hub.fleetbus(
        "notify",
        "add",
        "oncall",
        "--url-file",
        str(url_file),
        "--format",
        "cloudevents",
        "--event",
        "ClusterRegistered",
    )
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    assert len(key) >= 32
    assert SECRET_PATH not in added.stdout

    assert hub.fleetbus("cluster", "register", "edge-1").returncode == 0
    wait_until(lambda: len(receiver.received) >= 1, "the registration delivered", within=30)
    headers, body = receiver.received[0]
    assert verify(key, headers, body)
    cloud = json.loads(body)
    assert cloud["type"] == "io.fleetbus.ClusterRegistered"
    assert cloud["data"]["clusters"] == ["edge-1"]

    for output in ("table", "wide", "json", "yaml"):
        listed = hub.fleetbus("notify", "ls", "-o", output)
        assert listed.returncode == 0, listed.stderr
        assert "oncall" in listed.stdout
        assert SECRET_PATH not in listed.stdout
        assert key not in listed.stdout
        status = hub.fleetbus("notify", "status", "-o", output)
        assert status.returncode == 0, status.stderr
        assert SECRET_PATH not in status.stdout
        assert key not in status.stdout
    [entry] = json.loads(hub.fleetbus("notify", "status", "-o", "json").stdout)
    assert entry["health"] == "ok"
    assert entry["delivered"] == 1
    assert yaml.safe_load(hub.fleetbus("notify", "ls", "-o", "yaml").stdout)[0]["endpoint"] == (
        f"http://127.0.0.1:{receiver.port}"
    )
    table = hub.fleetbus("notify", "status").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "HEALTH", "PENDING", "DELIVERED"]
    text = metrics(hub)
    assert (
        'fleetbus_notifications_delivered_total{sink="cloudevents",subscription="oncall"} 1.0'
        in (text)
    )
    assert SECRET_PATH not in text

    # After a restart the subscription is there and delivers again.
    assert hub.interrupt() == 0
    hub.start()
    assert hub.fleetbus("cluster", "register", "edge-2").returncode == 0
    wait_until(lambda: len(receiver.received) >= 2, "delivered after a restart", within=30)
    assert json.loads(receiver.received[1][1])["data"]["clusters"] == ["edge-2"]

    for path in hub.data_dir.rglob("*"):
        if path.is_file() and path.name != "notifications.json":
            assert SECRET_PATH.encode() not in path.read_bytes(), path
            assert key.encode() not in path.read_bytes(), path
    assert (hub.data_dir / "notifications.json").stat().st_mode & 0o777 == 0o600

    removed = hub.fleetbus("notify", "rm", "oncall")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(hub.fleetbus("notify", "ls", "-o", "json").stdout) == []


def test_bad_notify_input_is_refused_clearly(hub: Hub, tmp_path: Path) -> None:
    hub.start()
    cases = [
        (("add", "x", "--url", "ftp://example.test/hook"), "url"),
        (("add", "x", "--url", "http://127.0.0.1/h", "--event", "Nope"), "unknown event type"),
        (("add", "Bad_Name", "--url", "http://127.0.0.1/h"), "name"),
        (("add", "x", "--url-file", str(tmp_path / "missing")), "cannot read the URL"),
        (("rm", "nobody-here"), "no notification subscription named 'nobody-here'"),
        (("status", "nobody-here"), "no notification subscription named 'nobody-here'"),
    ]
    for args, words in cases:
        done = hub.fleetbus("notify", *args)
        assert done.returncode != 0, args
        assert words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert json.loads(hub.fleetbus("notify", "ls", "-o", "json").stdout) == []
    assert not (hub.data_dir / "notifications.json").exists()
