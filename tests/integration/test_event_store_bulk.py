"""The event store at volume: replays across many pull batches, pipelined appends."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import UTC, datetime

from events.catalog import ClusterLabelsChanged, ClusterRegistered
from events.errors import ConcurrencyConflict, PayloadTooLarge
from events.ids import new_event_id
from events.replay import REPLAY_BATCH
from events.store import Append, AppendResult, EventStore, StoredEvent
from events.streams import MAX_PAYLOAD

MANY = 2 * REPLAY_BATCH + 123
"""More events than two pull batches hold, and not a multiple of one."""


def registered(cluster: str, **labels: str) -> ClusterRegistered:
    return ClusterRegistered(
        id=new_event_id(),
        occurred_at=datetime.now(UTC),
        actor="user:test",
        cluster=cluster,
        labels=labels,
    )


def relabelled(cluster: str, **labels: str) -> ClusterLabelsChanged:
    return ClusterLabelsChanged(
        id=new_event_id(),
        occurred_at=datetime.now(UTC),
        actor="user:test",
        cluster=cluster,
        labels=labels,
    )


async def fill(store: EventStore, count: int) -> list[str]:
    events = [registered(f"c{i}") for i in range(count)]
    outcomes = await store.append_many([Append(events=[event]) for event in events])
    assert all(isinstance(outcome, AppendResult) for outcome in outcomes)
    return [event.id for event in events]


async def read_all(store: EventStore, **kwargs: object) -> list[StoredEvent]:
    return [stored async for stored in store.read(**kwargs)]  # type: ignore[arg-type]


async def test_a_replay_returns_every_event_of_a_log_larger_than_one_batch(
    event_store: EventStore,
) -> None:
    ids = await fill(event_store, MANY)
    stored = await read_all(event_store)
    assert [s.event.id for s in stored] == ids
    assert [s.seq for s in stored] == list(range(1, MANY + 1))
    assert stored[0].headers == {"Nats-Msg-Id": ids[0]}
    assert all(a.stored_at <= b.stored_at for a, b in itertools.pairwise(stored))


async def test_a_replay_from_a_sequence_or_a_time_spans_batches(event_store: EventStore) -> None:
    ids = await fill(event_store, MANY)
    middle = REPLAY_BATCH - 7
    from_seq = await read_all(event_store, from_seq=middle)
    assert [s.event.id for s in from_seq] == ids[middle - 1 :]
    everything = await read_all(event_store)
    cut = everything[middle].stored_at
    since = await read_all(event_store, since=cut)
    assert since[0].stored_at >= cut
    assert since[-1].event.id == ids[-1]
    until = await read_all(event_store, until=cut)
    assert until[-1].stored_at <= cut
    assert len(until) + len(since) >= MANY


async def test_a_filtered_replay_finds_one_aggregate_among_many(event_store: EventStore) -> None:
    await fill(event_store, REPLAY_BATCH + 10)
    await event_store.append([relabelled("c3", env="prod")])
    mine = await read_all(event_store, subject="fleet.evt.cluster.c3")
    assert [s.event.type_name for s in mine] == ["ClusterRegistered", "ClusterLabelsChanged"]
    assert await read_all(event_store, subject="fleet.evt.cluster.nobody") == []


async def test_an_abandoned_replay_leaves_no_consumer_behind(event_store: EventStore) -> None:
    await fill(event_store, 50)
    replay = event_store.read()
    async for _ in replay:
        break
    await replay.aclose()
    async for stored in event_store.read(from_seq=50):
        assert stored.seq == 50
    info = await event_store.stream_info()
    assert info["state"]["consumer_count"] == 0


async def test_follow_goes_on_after_replaying_many_batches(event_store: EventStore) -> None:
    ids = await fill(event_store, MANY)
    later = [registered("late-1"), registered("late-2")]
    seen: list[str] = []

    async def tail() -> None:
        async with contextlib.aclosing(event_store.follow()) as events:
            async for stored in events:
                seen.append(stored.event.id)
                if len(seen) == MANY + len(later):
                    return

    task = asyncio.create_task(tail())
    for event in later:
        await event_store.append([event])
    await asyncio.wait_for(task, timeout=60)
    assert seen == ids + [event.id for event in later]


async def test_append_many_gives_each_commands_outcome_in_order(event_store: EventStore) -> None:
    existing = await event_store.append([registered("taken")], expected=0)
    huge = registered("huge", blob="x" * (MAX_PAYLOAD + 1))
    commands = [
        Append(events=[registered("a")], expected=0),
        Append(events=[registered("taken")], expected=0),
        Append(events=[registered("b"), registered("c"), registered("d")], expected=0),
        Append(events=[]),
        Append(events=[huge]),
        Append(events=[relabelled("taken", env="prod")], expected=existing.sequences[0]),
    ]
    outcomes = await event_store.append_many(commands)
    assert isinstance(outcomes[0], AppendResult)
    assert isinstance(outcomes[1], ConcurrencyConflict)
    assert isinstance(outcomes[2], AppendResult)
    assert len(outcomes[2].sequences) == 3
    assert outcomes[3] == AppendResult([])
    assert isinstance(outcomes[4], PayloadTooLarge)
    assert isinstance(outcomes[5], AppendResult)
    stored = await read_all(event_store)
    assert [s.event.cluster for s in stored] == ["taken", "a", "b", "c", "d", "taken"]  # type: ignore[attr-defined]


async def test_append_many_stores_a_retried_command_once(event_store: EventStore) -> None:
    single = registered("one")
    batch = [registered("two"), registered("three")]
    commands = [Append(events=[single], expected=0), Append(events=batch, expected=0)]
    first = await event_store.append_many(commands)
    again = await event_store.append_many(commands)
    assert all(isinstance(outcome, AppendResult) and outcome.duplicate for outcome in again)
    assert [o.sequences for o in again if isinstance(o, AppendResult)] == [
        o.sequences for o in first if isinstance(o, AppendResult)
    ]
    assert len(await read_all(event_store)) == 3


async def test_append_many_keeps_more_batches_than_the_server_holds_open_apart(
    event_store: EventStore,
) -> None:
    commands = [Append(events=[registered(f"x{i}"), registered(f"y{i}")]) for i in range(80)]
    outcomes = await event_store.append_many(commands, window=100_000)
    assert all(isinstance(outcome, AppendResult) for outcome in outcomes), outcomes[:3]
    assert len(await read_all(event_store)) == 160
