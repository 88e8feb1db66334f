"""The event store on a real nats-server: appends, replays, races, retries, crashes, garbage."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from events.catalog import ClusterLabelsChanged, ClusterRegistered, Event
from events.codec import EventDecoder
from events.errors import ConcurrencyConflict, EventLogError, UndecodableEvent
from events.ids import new_event_id
from events.store import EventStore, StoredEvent, connect
from events.streams import REPORTS_STREAM
from tests.conftest import HubNats

FIXTURES = Path(__file__).parent.parent / "fixtures" / "events"


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


async def read_all(store: EventStore, **kwargs: object) -> list[StoredEvent]:
    return [stored async for stored in store.read(**kwargs)]  # type: ignore[arg-type]


async def test_every_event_type_round_trips_through_the_log(event_store: EventStore) -> None:
    decoder = EventDecoder()
    # Reports published into the hub land in REPORTS (the way client clusters write them).
    outbox = event_store.on_stream(REPORTS_STREAM)
    originals: list[Event] = []
    for path in sorted(FIXTURES.glob("*.json")):
        event = decoder.decode(path.read_bytes())
        # fixtures share ids; give each a fresh one so none is taken for a retry
        event = msgspec.structs.replace(event, id=new_event_id())
        originals.append(event)
        await event_store.append([event])
    stored = await read_all(event_store)
    stored += [s async for s in outbox.read()]
    assert sorted(s.event.id for s in stored) == sorted(e.id for e in originals)
    by_id = {s.event.id: s.event for s in stored}
    for event in originals:
        assert by_id[event.id] == event
    # Every fixture's type comes back (an old version's fixture decodes to today's type).
    assert {s.event.type_name for s in stored} == {e.type_name for e in originals}


async def test_replay_starts_at_a_sequence_or_a_time(event_store: EventStore) -> None:
    for i in range(5):
        await event_store.append([registered(f"c{i}")])
    from_third = await read_all(event_store, from_seq=3)
    assert [s.seq for s in from_third] == [3, 4, 5]
    assert [s.event.cluster for s in from_third] == ["c2", "c3", "c4"]  # type: ignore[attr-defined]

    cut = from_third[1].stored_at
    since = await read_all(event_store, since=cut)
    assert [s.seq for s in since] == [4, 5]
    until = await read_all(event_store, until=cut)
    assert [s.seq for s in until] == [1, 2, 3, 4]
    assert await read_all(event_store, from_seq=99) == []
    assert await read_all(event_store, since=cut + timedelta(hours=1)) == []


async def test_replay_filters_by_subject(event_store: EventStore) -> None:
    await event_store.append([registered("a")])
    await event_store.append([registered("b")])
    await event_store.append([relabelled("a", env="prod")])
    only_a = await read_all(event_store, subject="fleet.evt.cluster.a")
    assert [s.event.type_name for s in only_a] == ["ClusterRegistered", "ClusterLabelsChanged"]


async def test_two_writers_racing_on_one_aggregate_exactly_one_wins(
    event_store: EventStore, hub_nats: HubNats
) -> None:
    first = await event_store.append([registered("edge")], expected=0)
    version = first.sequences[0]
    other_nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    other = EventStore(other_nc)
    try:
        results = await asyncio.gather(
            event_store.append([relabelled("edge", env="a")], expected=version),
            other.append([relabelled("edge", env="b")], expected=version),
            return_exceptions=True,
        )
    finally:
        await other.close()
    conflicts = [r for r in results if isinstance(r, ConcurrencyConflict)]
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(conflicts) == 1, results
    assert len(wins) == 1, results
    assert await event_store.subject_version("fleet.evt.cluster.edge") == wins[0].sequences[0]


async def test_creating_an_aggregate_that_exists_is_a_conflict(event_store: EventStore) -> None:
    await event_store.append([registered("edge")], expected=0)
    with pytest.raises(ConcurrencyConflict, match=r"fleet\.evt\.cluster\.edge"):
        await event_store.append([registered("edge")], expected=0)


async def test_a_retried_append_is_stored_once(event_store: EventStore) -> None:
    event = registered("edge")
    first = await event_store.append([event], expected=0)
    again = await event_store.append([event], expected=0)
    assert again.duplicate
    assert again.sequences == first.sequences
    assert len(await read_all(event_store)) == 1


async def test_the_events_of_one_command_are_stored_together(event_store: EventStore) -> None:
    result = await event_store.append(
        [registered("a"), registered("b"), registered("c")], expected=0
    )
    assert result.sequences == [1, 2, 3]
    assert [s.event.cluster for s in await read_all(event_store)] == ["a", "b", "c"]  # type: ignore[attr-defined]


async def test_a_refused_batch_leaves_nothing_behind(event_store: EventStore) -> None:
    await event_store.append([registered("a")], expected=0)
    with pytest.raises(ConcurrencyConflict):
        await event_store.append([registered("a"), registered("b"), registered("c")], expected=0)
    stored = await read_all(event_store)
    assert [s.event.cluster for s in stored] == ["a"]  # type: ignore[attr-defined]


async def test_acknowledged_events_survive_kill_9_of_the_server(
    event_store: EventStore, hub_nats: HubNats
) -> None:
    acknowledged = []
    for i in range(200):
        event = registered(f"c{i}")
        await event_store.append([event])
        acknowledged.append(event.id)
    hub_nats.server.kill()
    hub_nats.server.start()
    nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    store = EventStore(nc)
    try:
        ids = [s.event.id async for s in store.read()]
    finally:
        await store.close()
    assert ids == acknowledged


async def test_garbage_on_the_stream_is_reported_by_sequence_and_skipped_when_asked(
    event_store: EventStore,
) -> None:
    await event_store.append([registered("a")])
    await event_store.nc.request("fleet.evt.cluster.x", b"\x00 not json", timeout=5)
    await event_store.nc.request("fleet.evt.cluster.y", b'{"type":"Nope","version":1}', timeout=5)
    await event_store.nc.request(
        "fleet.evt.cluster.z", b'{"type":"ClusterRegistered","version":1}', timeout=5
    )
    await event_store.append([registered("b")])

    with pytest.raises(UndecodableEvent) as info:
        await read_all(event_store)
    assert info.value.seq == 2

    skipped: list[UndecodableEvent] = []
    good = await read_all(event_store, skip_undecodable=True, on_undecodable=skipped.append)
    assert [s.seq for s in good] == [1, 5]
    assert [bad.seq for bad in skipped] == [2, 3, 4]
    assert "unknown event type 'Nope'" in str(skipped[1])
    assert "missing required field" in str(skipped[2])


async def test_follow_delivers_events_appended_after_it_started(event_store: EventStore) -> None:
    await event_store.append([registered("before")])
    seen: list[str] = []

    async def tail() -> None:
        async with contextlib.aclosing(event_store.follow()) as events:
            async for stored in events:
                seen.append(stored.event.cluster)  # type: ignore[attr-defined]
                if len(seen) == 3:
                    return

    task = asyncio.create_task(tail())
    await event_store.append([registered("after-1")])
    await event_store.append([registered("after-2")])
    await asyncio.wait_for(task, timeout=60)
    assert seen == ["before", "after-1", "after-2"]


async def test_subject_version_is_zero_for_a_new_aggregate(event_store: EventStore) -> None:
    assert await event_store.subject_version("fleet.evt.cluster.nobody") == 0
    result = await event_store.append([registered("somebody")])
    assert await event_store.subject_version("fleet.evt.cluster.somebody") == result.sequences[0]


async def test_a_retried_batch_is_stored_once(event_store: EventStore) -> None:
    events = [registered("a"), registered("b")]
    first = await event_store.append(events, expected=0)
    again = await event_store.append(events, expected=0)
    assert again.duplicate
    assert again.sequences == first.sequences
    assert len(await read_all(event_store)) == 2


async def test_the_hubs_service_user_cannot_delete_the_log(event_store: EventStore) -> None:
    await event_store.append([registered("kept")])
    impatient = EventStore(event_store.nc, timeout=1.0, attempts=1)
    with pytest.raises(EventLogError):
        await impatient.api_request("STREAM.DELETE.EVENTS")
    assert await event_store.last_sequence() == 1
