"""The hub lease (`fleetbus.hub_lease`): one `fleetbus up` per hub on a NATS cluster.

Real nats-server, LEASES as the hub creates it, a short TTL: a second holder is refused while
the first renews, takes over once a killed holder's lease lapses, and the first then learns it
lost the lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api.auth import Role
from events.store import EventStore, connect
from events.streams import leases_stream
from events.tasks import cancel_and_wait
from fleetbus.errors import DataDirLocked
from fleetbus.hub_lease import HubLease
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.integration.api_harness import live_api

TTL_S = 2


@pytest.fixture
async def other_store(event_store: EventStore, hub_nats: HubNats) -> AsyncIterator[EventStore]:
    await event_store.ensure_stream(leases_stream())
    other = EventStore(await connect(hub_nats.url, credentials=hub_nats.credentials))
    try:
        yield other
    finally:
        await other.close()


async def test_a_second_hub_process_is_refused_while_the_first_renews_its_lease(
    event_store: EventStore, other_store: EventStore
) -> None:
    first = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await first.acquire()
    stop = asyncio.Event()
    keeper = asyncio.create_task(first.keep(stop))
    try:
        second = HubLease(other_store, "host-b:2:/srv/b", ttl_s=TTL_S)
        with pytest.raises(DataDirLocked, match=r"host-a:1:/srv/a holds its lease"):
            # Longer than the TTL: only renewals keep the first one's lease alive.
            await second.acquire(wait_s=TTL_S * 1.5)
        assert await first.current() == (first.seq, "host-a:1:/srv/a")
    finally:
        stop.set()
        await keeper
    await first.release()
    assert await first.current() == (0, "")
    await second.acquire(wait_s=0)
    assert (await second.current())[1] == "host-b:2:/srv/b", "released: taken at once"


async def test_a_killed_holders_lease_lapses_and_it_learns_it_lost_the_hub(
    event_store: EventStore, other_store: EventStore
) -> None:
    first = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await first.acquire()
    # Killed: no renewal, no release.
    second = HubLease(other_store, "host-b:2:/srv/b", ttl_s=TTL_S)
    started = time.monotonic()
    await second.acquire(wait_s=TTL_S * 5)
    assert time.monotonic() - started < TTL_S * 5
    assert (await second.current())[1] == "host-b:2:/srv/b"
    # The first one, still running (paused, cut off), finds its lease taken and stops.
    stop = asyncio.Event()
    keeper = asyncio.create_task(first.keep(stop))
    try:
        await asyncio.wait_for(stop.wait(), timeout=TTL_S * 3)
    finally:
        await cancel_and_wait([keeper])
    assert first.taken_by == "host-b:2:/srv/b"
    assert (await second.current())[1] == "host-b:2:/srv/b", "the loser wrote nothing"


async def test_a_renewal_stored_whose_answer_was_lost_keeps_the_hub(
    event_store: EventStore,
) -> None:
    await event_store.ensure_stream(leases_stream())
    lease = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await lease.acquire()
    written = lease.seq
    # A renewal the server stored but whose answer never came back: the lease is this
    # process's own at a later sequence than the one it knows.
    stored = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await stored.acquire(wait_s=0)
    assert stored.seq > written
    stop = asyncio.Event()
    keeper = asyncio.create_task(lease.keep(stop))
    try:
        await eventually(lambda: lease.seq > stored.seq, "a renewal", within=TTL_S * 3)
        assert not stop.is_set(), "a lost answer is not another holder"
    finally:
        stop.set()
        await cancel_and_wait([keeper])
    assert lease.taken_by == ""
    assert await lease.current() == (lease.seq, "host-a:1:/srv/a")


async def test_the_same_process_takes_its_own_lease_again(event_store: EventStore) -> None:
    await event_store.ensure_stream(leases_stream())
    lease = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await lease.acquire()
    again = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await again.acquire(wait_s=0)
    assert (await again.current())[0] == again.seq > lease.seq


async def test_a_standby_waits_past_the_ttl_and_takes_over_within_one_ttl_of_the_holders_death(
    event_store: EventStore, other_store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetbus.hub_lease")
    first = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await first.acquire()
    stop = asyncio.Event()
    keeper = asyncio.create_task(first.keep(stop))
    standby = HubLease(other_store, "host-b:2:/srv/b", ttl_s=TTL_S)
    waiting = asyncio.create_task(standby.acquire(standby=True))
    try:
        # Well past the TTL: renewals keep the holder's lease, and the standby keeps waiting
        # (without --standby it would have been refused by now).
        done, _ = await asyncio.wait({waiting}, timeout=TTL_S * 2.5)
        assert not done, "the standby took the lease while its holder renewed it"
        assert await first.current() == (first.seq, "host-a:1:/srv/a")
        assert "standby: the hub lease is held by host-a:1:/srv/a" in caplog.text
        # The holder dies: no renewal, no release.
        stop.set()
        await keeper
        died_at = time.monotonic()
        await asyncio.wait_for(waiting, timeout=TTL_S * 5)
        took_after = time.monotonic() - died_at
    finally:
        stop.set()
        await cancel_and_wait([keeper, waiting])
    assert took_after <= TTL_S + 2.5, f"taken over {took_after:.1f} s after the holder died"
    assert (await standby.current())[1] == "host-b:2:/srv/b"
    assert standby.took_over_from == "host-a:1:/srv/a"
    assert standby.acquired_at is not None
    assert "host-b:2:/srv/b took over the hub from host-a:1:/srv/a at " in caplog.text


async def test_a_standby_takes_over_at_once_when_the_holder_stops_and_releases(
    event_store: EventStore, other_store: EventStore
) -> None:
    first = HubLease(event_store, "host-a:1:/srv/a", ttl_s=30)
    await first.acquire()
    standby = HubLease(other_store, "host-b:2:/srv/b", ttl_s=30)
    waiting = asyncio.create_task(standby.acquire(standby=True))
    try:
        await eventually(lambda: standby_announced(standby), what="the standby waits")
        await first.release()
        released_at = time.monotonic()
        await asyncio.wait_for(waiting, timeout=10)
    finally:
        await cancel_and_wait([waiting])
    # Far inside the 30 s TTL: the released lease is taken at once.
    assert time.monotonic() - released_at < 5
    assert (await standby.current())[1] == "host-b:2:/srv/b"


def standby_announced(lease: HubLease) -> bool:
    return lease.waiting_for == "host-a:1:/srv/a"


async def test_the_api_names_who_holds_each_lease_and_only_for_the_whole_hub(
    event_store: EventStore, other_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api:
        async with api.client(Role.viewer) as client:
            nobody = await client.get("/api/v1/leases")
            assert nobody.status_code == 200, nobody.text
            assert nobody.json() == {"leases": []}
            first = HubLease(other_store, "host-a:1:/srv/a", ttl_s=TTL_S)
            await first.acquire()
            held = (await client.get("/api/v1/leases")).json()["leases"]
            assert [(lease["lease"], lease["holder"]) for lease in held] == [
                ("hub", "host-a:1:/srv/a")
            ]
            assert held[0]["renewedAt"].startswith(str(datetime.now(UTC).year))
            await first.release()
            assert (await client.get("/api/v1/leases")).json() == {"leases": []}
        project_viewer = await api.hub.tokens.create(
            role=Role.viewer, name="team-viewer", now=datetime.now(UTC), project="team-a"
        )
        async with httpx.AsyncClient(
            base_url=api.url, headers={"Authorization": f"Bearer {project_viewer[1]}"}
        ) as client:
            refused = await client.get("/api/v1/leases")
            assert refused.status_code == 403, refused.text
            assert "host-a" not in refused.text
