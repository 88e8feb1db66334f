"""The hub's one supervisor: failures restart a service after the backoff, stopping stops all."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

from events.errors import EventLogUnavailable
from fleetbus.supervision import Backoff, Supervisor, supervise
from scheduler.provisioning import REACHABLE_WITHIN, REVIVE_COOLDOWN, sources_to_revive
from taskset.errors import FleetbusError

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
QUICK = Backoff(first=0.001, factor=2.0, ceiling=0.004)


def test_backoff_doubles_from_first_up_to_its_ceiling() -> None:
    delays = Backoff(first=0.5, factor=2.0, ceiling=10.0).delays()
    assert list(itertools.islice(delays, 7)) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def test_a_service_that_fails_is_started_again_until_a_run_returns() -> None:
    failures: list[BaseException] = [
        EventLogUnavailable("log unreachable"),
        FleetbusError("refused"),
        RuntimeError("a bug"),
    ]
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if failures:
            raise failures.pop(0)

    async with asyncio.timeout(10):
        await supervise("flaky", run, asyncio.Event(), QUICK)
    assert runs == 4


async def test_each_failure_is_told_with_its_error_and_the_pause_before_the_next_start() -> None:
    failures: list[Exception] = [FleetbusError("refused"), RuntimeError("a bug")]
    told: list[tuple[str, float]] = []

    async def run() -> None:
        if failures:
            raise failures.pop(0)

    async with asyncio.timeout(10):
        await supervise(
            "flaky", run, asyncio.Event(), QUICK, on_failure=lambda e, d: told.append((str(e), d))
        )
    assert told == [("refused", 0.001), ("a bug", 0.002)]


async def test_stopping_the_supervisor_cancels_log_followers_and_lets_watchers_finish() -> None:
    supervisor = Supervisor()
    finished: list[str] = []

    async def follows_forever() -> None:
        await asyncio.Event().wait()

    async def watches_stop() -> None:
        await supervisor.stop_event.wait()
        finished.append("watcher")

    follower = supervisor.start("follower", follows_forever)
    watcher = supervisor.start("watcher", watches_stop, watches_stop=True)
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await supervisor.stop()
    assert follower.cancelled()
    assert not watcher.cancelled()
    assert finished == ["watcher"]
    assert supervisor.tasks == []


def test_only_recently_seen_sources_out_of_their_cooldown_are_revived() -> None:
    last_seen = {
        "fresh": NOW - timedelta(seconds=5),
        "gone": NOW - REACHABLE_WITHIN - timedelta(seconds=1),
        "cooling": NOW - timedelta(seconds=5),
        "unsourced": NOW,
    }
    revived = {"cooling": NOW - REVIVE_COOLDOWN + timedelta(seconds=1)}
    sourced = ["fresh", "gone", "cooling", "silent"]
    assert sources_to_revive(sourced, last_seen, revived, NOW) == {"fresh"}
