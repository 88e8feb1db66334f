"""Tasks reading the log from a real nats-server stop when cancelled, at whatever moment.

nats-py swallows a cancellation that arrives while it flushes a command, so a log follower
cancelled during its start (stream info, replay consumer, ordered consumer) used to carry on
and wait for the next event forever, and whoever waited for it after `cancel()` hung with it.
Each case below cancels at many moments of a start-up; a single `cancel()` leaves some of
them running.
"""

from __future__ import annotations

import asyncio
import random

from events.store import EventStore
from events.tasks import cancel_and_wait
from scheduler.provisioning import CLUSTER_EVENTS, ProvisioningService
from tests.integration.test_provisioning import append_all, registration

MOMENTS = 40


def moments() -> list[float]:
    """Delays before the cancel, spread over a start-up (a few ms on a quiet machine)."""
    pick = random.Random(20261127)
    return [pick.uniform(0.0, 0.012) for _ in range(MOMENTS)]


async def test_a_log_follower_cancelled_during_its_start_stops(event_store: EventStore) -> None:
    await append_all(event_store, [registration("sim-1", client=True)])

    async def follow() -> None:
        async for _ in event_store.follow(from_seq=1, subject=CLUSTER_EVENTS):
            pass

    for delay in moments():
        task = asyncio.create_task(follow())
        await asyncio.sleep(delay)
        async with asyncio.timeout(30):
            await cancel_and_wait([task])
        assert task.done()


async def test_provisioning_cancelled_at_any_moment_stops(event_store: EventStore) -> None:
    await append_all(event_store, [registration(f"sim-{i}", client=True) for i in range(3)])

    for delay in moments():
        service = ProvisioningService(event_store)
        running = asyncio.create_task(service.run())
        await asyncio.sleep(delay)
        async with asyncio.timeout(30):
            await cancel_and_wait([running])
        assert running.done()
