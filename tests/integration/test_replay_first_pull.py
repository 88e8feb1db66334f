"""A replay whose first pull request finds no consumer answering asks again, for a while.

Right after a node of a NATS cluster is lost, a replay's consumer can be placed where nothing
answers yet, and its first pull request comes back 503 (no responders). Here the consumer is
deleted on the real server just before its first pull(s), which makes the server answer that
pull exactly so.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from events import replay
from events.catalog import ClusterRegistered
from events.errors import EventLogUnavailable
from events.store import EventStore
from events.streams import EVENTS_STREAM

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS = 40


def registered(i: int) -> ClusterRegistered:
    return ClusterRegistered(
        id=f"reg-{i}", occurred_at=NOW, actor="test", cluster=f"c-{i}", labels={}
    )


def first_pulls_unanswered(
    monkeypatch: pytest.MonkeyPatch, store: EventStore, times: int
) -> list[str]:
    """Delete each of the first `times` replay consumers on the server right before its
    first pull; the names of the consumers whose first pull was sent."""
    pulled: list[str] = []
    original = replay._ReplayConsumer.pull

    async def pull(self: replay._ReplayConsumer) -> replay._PulledBatch:
        if self.name not in pulled:
            pulled.append(self.name)
            if len(pulled) <= times:
                await store.api_request(f"CONSUMER.DELETE.{EVENTS_STREAM}.{self.name}")
        return await original(self)

    monkeypatch.setattr(replay._ReplayConsumer, "pull", pull)
    return pulled


async def replay_consumers(store: EventStore) -> list[str]:
    page = await store.api_request(f"CONSUMER.NAMES.{EVENTS_STREAM}", {})
    return [name for name in page.get("consumers") or [] if name.startswith("replay-")]


async def test_a_replay_whose_first_pull_finds_no_consumer_asks_again_and_reads_everything(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await event_store.append([registered(i) for i in range(EVENTS)])
    pulled = first_pulls_unanswered(monkeypatch, event_store, times=2)

    read = [stored.event async for stored in event_store.read()]

    assert [e.cluster for e in read if isinstance(e, ClusterRegistered)] == [
        f"c-{i}" for i in range(EVENTS)
    ]
    assert len(pulled) == 3  # two unanswered first pulls, then the read
    assert await replay_consumers(event_store) == []


async def test_a_replay_whose_first_pull_is_never_answered_fails_naming_the_stream(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await event_store.append([registered(i) for i in range(EVENTS)])
    monkeypatch.setattr(replay, "FIRST_PULL_WITHIN_S", 1.0)
    pulled = first_pulls_unanswered(monkeypatch, event_store, times=1_000)

    started = time.monotonic()
    with pytest.raises(EventLogUnavailable, match=rf"cannot read {EVENTS_STREAM}: .*1 s"):
        async for _ in event_store.read():
            pass
    assert time.monotonic() - started < 10
    assert len(pulled) >= 2  # asked again before giving up
    assert await replay_consumers(event_store) == []
