"""The work queue: one worker per key at a time, bursts coalesced, nothing lost."""

from __future__ import annotations

import asyncio

from workqueue import WorkQueue


async def test_a_key_added_many_times_is_handed_out_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")

    assert await queue.get() == "a"
    assert await queue.get() == "b"
    assert queue.pending() == 0


async def test_a_key_changed_while_held_comes_back_after_done_never_twice_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    held = await queue.get()

    queue.add("a")

    assert queue.pending() == 0
    queue.done(held)
    assert queue.pending() == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert not queue.busy()


async def test_a_delayed_key_arrives_after_its_delay_and_the_earlier_timer_wins() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.0)
    queue.add_after("a", 60.0)

    key = await asyncio.wait_for(queue.get(), timeout=60)

    assert key == "a"
    queue.done(key)
    queue.close()


async def test_a_key_is_in_the_queue_while_queued_held_or_waiting_on_its_timer() -> None:
    queue: WorkQueue[str] = WorkQueue()
    assert "a" not in queue
    queue.add("a")
    assert "a" in queue
    held = await queue.get()
    assert "a" in queue
    queue.done(held)
    assert "a" not in queue
    queue.add_after("a", 60.0)
    assert "a" in queue
    queue.close()
    assert "a" not in queue
