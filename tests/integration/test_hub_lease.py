"""The hub lease (`fleetbus.hub_lease`): one `fleetbus up` per hub on a NATS cluster.

Real nats-server, LEASES as the hub creates it, a short TTL: a second holder is refused while
the first renews, takes over once a killed holder's lease lapses, and the first then learns it
lost the lease.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from events.store import EventStore, connect
from events.streams import leases_stream
from events.tasks import cancel_and_wait
from fleetbus.errors import DataDirLocked
from fleetbus.hub_lease import HubLease
from tests.conftest import HubNats

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


async def test_the_same_process_takes_its_own_lease_again(event_store: EventStore) -> None:
    await event_store.ensure_stream(leases_stream())
    lease = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await lease.acquire()
    again = HubLease(event_store, "host-a:1:/srv/a", ttl_s=TTL_S)
    await again.acquire(wait_s=0)
    assert (await again.current())[0] == again.seq > lease.seq
