"""`cancel_and_wait` stops tasks that shrug off a cancellation, as nats-py's flush makes them."""

from __future__ import annotations

import asyncio
import contextlib

from events.tasks import cancel_and_wait


async def _shrugs_off_one_cancel(started: asyncio.Event) -> str:
    """Like a task inside nats-py's `_flush_pending`: the first CancelledError is swallowed."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
    await asyncio.sleep(3600)
    return "never"


async def test_a_task_that_swallowed_the_first_cancel_is_cancelled_again_until_it_ends() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(_shrugs_off_one_cancel(started))
    await started.wait()

    async with asyncio.timeout(30):
        [outcome] = await cancel_and_wait([task], every_s=0.01)

    assert task.cancelled()
    assert isinstance(outcome, asyncio.CancelledError)


async def test_a_single_cancel_is_not_enough_for_such_a_task() -> None:
    """The premise of the helper: one cancel() leaves the task running."""
    started = asyncio.Event()
    task = asyncio.create_task(_shrugs_off_one_cancel(started))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.05)
    assert not done
    await cancel_and_wait([task], every_s=0.01)


async def test_outcomes_come_back_in_order_and_finished_tasks_are_left_alone() -> None:
    async def returns() -> str:
        return "result"

    async def fails() -> None:
        raise ValueError("broken")

    async def cleans_up(cleaned: list[str]) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            cleaned.append("cleaned")
            raise
        return "never"

    cleaned: list[str] = []
    finished = asyncio.create_task(returns())
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(cleans_up(cleaned))
    await asyncio.sleep(0)

    outcomes = await cancel_and_wait([finished, failed, waiting])

    assert outcomes[0] == "result"
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert not finished.cancelled()
    assert not failed.cancelled()
    assert cleaned == ["cleaned"]


async def test_nothing_to_wait_for() -> None:
    assert await cancel_and_wait([]) == []


async def test_helpers_are_stopped_even_when_the_caller_is_cancelled_meanwhile() -> None:
    """A service stopping its follower from `finally` and cancelled again while it waits."""
    started = asyncio.Event()
    helper = asyncio.create_task(_shrugs_off_one_cancel(started))
    await started.wait()

    async def service() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await cancel_and_wait([helper], every_s=0.2)

    running = asyncio.create_task(service())
    await asyncio.sleep(0)
    running.cancel()
    await asyncio.sleep(0.01)
    running.cancel()  # while the service waits for its helper

    async with asyncio.timeout(30):
        await asyncio.wait({running})
    assert running.cancelled()
    assert helper.done()
