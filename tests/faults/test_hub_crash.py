"""R1: kill -9 the hub's nats-server while several writer processes append; nothing is lost.

Writers are separate processes, each on its own connection, appending a seeded mix of
conditional appends, unconditional appends and atomic batches. The test kills the server with
SIGKILL at seeded points of the burst, keeps it down for a seeded time, starts it again on the
same store, and lets the writers retry what went unanswered (same event ids). Afterwards every
acknowledged event is in the log exactly once, at the sequence its acknowledgement named.

The projector follows the log through every kill; once it has caught up, its read models must
hash equal to a clean replay of the log into a fresh database.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from events.store import EventStore, connect
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.faults.harness import (
    LONG,
    WriterFleet,
    check_exactly_once,
    read_log,
    record_figures,
    split_evenly,
)
from tests.faults.projection import clean_replay_digests, start_projector
from tests.security.live_hub import LiveHub

WRITERS = 4


def kill_points(rng: random.Random, total: int, kills: int) -> list[int]:
    """Acknowledged-event counts at which to kill: one inside each equal slice of the first
    60% of the burst, so the writers are still busy when the last kill comes even after a slow
    restart."""
    width = 0.6 * total / (kills + 1)
    return [int(width * (index + rng.uniform(0.6, 1.4))) for index in range(kills)]


@pytest.mark.parametrize(
    ("seed", "total", "kills"),
    [
        pytest.param(1126, 10_000, 2, id="seed=1126-events=10000-kills=2"),
        pytest.param(7, 10_000, 3, id="seed=7-events=10000-kills=3", marks=LONG),
        pytest.param(4242, 30_000, 5, id="seed=4242-events=30000-kills=5", marks=LONG),
    ],
)
async def test_every_acknowledged_append_survives_kill_9_of_the_hub_exactly_once(
    hub_nats: HubNats, event_store: EventStore, tmp_path: Path, seed: int, total: int, kills: int
) -> None:
    rng = random.Random(seed)
    fleet = WriterFleet(
        urls=[hub_nats.url],
        credentials=hub_nats.credentials,
        directory=tmp_path / "writers",
        seed=seed,
        counts=split_evenly(total, WRITERS),
    )
    started = time.monotonic()
    outages: list[dict[str, float]] = []
    projector = await start_projector(
        [hub_nats.url], hub_nats.credentials, tmp_path / "projector.db"
    )
    fleet.start()
    try:
        for point in kill_points(rng, total, kills):
            await eventually(
                lambda point=point: fleet.acknowledged() >= point,
                f"{point} acknowledged appends",
                within=120,
            )
            acknowledged = fleet.acknowledged()
            hub_nats.server.kill()
            downtime = rng.uniform(0.2, 1.5)
            await asyncio.sleep(downtime)  # the outage itself
            await asyncio.to_thread(hub_nats.server.start)
            outages.append({"at_ack": acknowledged, "down_s": round(downtime, 2)})
            assert acknowledged < total, "the kill came after the burst: it proves nothing"
        await fleet.wait(within=180)
        last = await event_store.last_sequence()
        await eventually(
            lambda: projector.caught_up(last), f"the projector reaching sequence {last}", 120
        )
    finally:
        fleet.kill_all()
        await projector.stop()
    elapsed = time.monotonic() - started
    log = await read_log(event_store)
    check_exactly_once(fleet, log)
    assert len(log) == total
    assert await projector.digests() == await clean_replay_digests(event_store, tmp_path)
    record_figures(
        "R1 hub nats-server kill -9",
        seed=seed,
        writers=WRITERS,
        appended=total,
        stored=len(log),
        faults_injected=len(outages),
        commands_retried=fleet.retried_commands(),
        outages=outages,
        events_lost=0,
        duplicates=0,
        projection_equals_clean_replay=True,
        seconds=round(elapsed, 1),
    )


@pytest.mark.parametrize(
    ("seed", "total", "kills"),
    [
        pytest.param(65, 3_000, 2, id="seed=65-events=3000-kills=2"),
        pytest.param(66, 10_000, 4, id="seed=66-events=10000-kills=4", marks=LONG),
    ],
)
async def test_fleetbus_up_starts_its_nats_server_again_after_kill_9_and_loses_nothing(
    tmp_path: Path, seed: int, total: int, kills: int
) -> None:
    """The same fault under `fleetbus up`: nobody restarts the nats-server but the hub itself."""
    rng = random.Random(seed)
    hub = LiveHub(tmp_path / "hub")
    await asyncio.to_thread(hub.start)
    credentials = hub.data_dir / "creds" / "hub.creds"
    url = f"nats://127.0.0.1:{hub.nats_port}"
    fleet = WriterFleet(
        urls=[url],
        credentials=credentials,
        directory=tmp_path / "writers",
        seed=seed,
        counts=split_evenly(total, WRITERS),
    )
    killed: list[int] = []
    back_after: list[float] = []
    fleet.start()
    try:
        for point in kill_points(rng, total, kills):
            await eventually(
                lambda point=point: fleet.acknowledged() >= point,
                f"{point} acknowledged appends",
                within=120,
            )
            pid = int((hub.data_dir / "nats.conf.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(fleet.acknowledged())
            gone_at = time.monotonic()
            await eventually(
                lambda pid=pid: served_by_another_pid(hub, pid),
                "the hub starting its nats-server again",
                within=60,
                interval=0.1,
            )
            back_after.append(round(time.monotonic() - gone_at, 2))
        await fleet.wait(within=180)
        nc = await connect(url, credentials=credentials)
        store = EventStore(nc)
        try:
            log = await read_log(store)
        finally:
            await store.close()
        check_exactly_once(fleet, log)
        assert len(log) == total
        assert hub.process is not None
        assert hub.process.poll() is None, "the hub died with its nats-server"
        health = await asyncio.to_thread(hub.http, "GET", "/healthz")
        assert health.status == 200, health.body
    finally:
        fleet.kill_all()
        await asyncio.to_thread(hub.stop)
    assert "starting it again" in hub.log_text()
    record_figures(
        "R1 nats-server kill -9 under fleetbus up",
        seed=seed,
        writers=WRITERS,
        appended=total,
        stored=len(log),
        faults_injected=len(killed),
        killed_at_ack=killed,
        nats_back_after_s=back_after,
        events_lost=0,
        duplicates=0,
    )


def served_by_another_pid(hub: LiveHub, old_pid: int) -> bool:
    """The hub's nats-server answers health checks again, as a new process."""
    try:
        pid = int((hub.data_dir / "nats.conf.pid").read_text())
    except (OSError, ValueError):
        return False
    if pid == old_pid:
        return False
    try:
        url = f"http://127.0.0.1:{hub.monitor_port()}/healthz"
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
