"""`fleetbus up --events-retain` as a user runs it: the hub archives what leaves the window,
`fleetbus events` and `state` still read all of it, `fleetbus events verify` checks it; a hub
whose EVENTS was created without a window refuses one, naming the flag."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.test_hub_process import Hub, hub, refused_up
from tests.eventually import wait_until
from tests.processes import nats_servers_under

__all__ = ["hub"]  # the hub process fixture, shared with test_hub_process


def append_clusters(hub: Hub, count: int) -> None:
    code = f"""
import asyncio, datetime
from events.catalog import ClusterRegistered
from events.ids import new_event_id
from events.store import Append
from fleetbus.local import open_local_store
async def main():
    store = await open_local_store(__import__("pathlib").Path({str(hub.data_dir)!r}))
    now = datetime.datetime.now(datetime.UTC)
    await store.append_many([
        Append([ClusterRegistered(id=new_event_id(), occurred_at=now, actor="user:test",
                                  cluster=f"edge-{{n}}")])
        for n in range({count})
    ])
    await store.close()
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_hub_with_a_retention_window_archives_and_still_reads_everything(hub: Hub) -> None:
    hub.start(
        "--events-retain", "events=100", "--snapshot-every", "50", "--events-archive-every", "1"
    )
    append_clusters(hub, 250)

    def verified() -> dict[str, object]:
        result = hub.fleetbus("events", "verify", "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        report: dict[str, object] = json.loads(result.stdout)
        return report

    wait_until(lambda: int(str(verified()["liveFrom"])) > 150, "the archiver's purge", within=60)
    report = verified()
    assert report["ok"] is True
    assert int(str(report["segments"])) >= 1
    assert int(str(report["archivedTo"])) >= int(str(report["liveFrom"])) - 1

    listed = hub.fleetbus("events", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    registered = [r["event"]["cluster"] for r in records if r["type"] == "ClusterRegistered"]
    assert registered == [f"edge-{n}" for n in range(250)]
    assert any(r["type"] == "EventsArchived" for r in records)

    old = hub.fleetbus("events", "--cluster", "edge-3", "--stream", "events", "-o", "json")
    assert old.returncode == 0, old.stderr
    assert [r["seq"] for r in json.loads(old.stdout)] == [4]
    state = hub.fleetbus("state", "--cluster", "edge-3", "-o", "json")
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["registered"] is True

    text = hub.fleetbus("events", "verify")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("verified: ")
    assert hub.interrupt() == 0


def test_a_hub_created_without_a_window_refuses_one_naming_the_flag(hub: Hub) -> None:
    hub.start()
    assert hub.interrupt() == 0
    result = refused_up(hub.data_dir, "--events-retain", "age=30d", nats_port=hub.nats_port)
    assert result.returncode != 0
    assert "--events-retain" in result.stderr
    assert "denies purges" in result.stderr
    assert "Traceback" not in result.stderr
    assert nats_servers_under(hub.data_dir) == []
    assert not (hub.data_dir / "hub.json").exists()
