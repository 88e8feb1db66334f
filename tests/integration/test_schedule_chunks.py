"""A log written one ClusterTaskScheduled per cluster (version 1) folds as the chunked form does.

`tests/fixtures/logs/schedule-v1.jsonl` is a small scheduling history as an older hub wrote
it: three clusters, two tasksets, an override, a second version, a relabel, a deregistration
and a retirement, with every cluster's decision its own event. The same history in today's form
names each decision's clusters in one event. Both must fold to the same scheduler state, the
same read models and audit rows, the same `state --at` answers, and a scheduler started on the
old log must find nothing to decide again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable
from itertools import count
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from api.event_records import concerns, event_record
from events.catalog import SCHEDULE_CHUNK, ClusterTaskScheduled, Event
from events.codec import EventDecoder, encode_event
from events.errors import UndecodableEvent
from events.store import Append, EventStore, StoredEvent
from events.streams import EVENTS_STREAM
from notify.model import clusters_of
from projector.db import ProjectionDb
from projector.queries import audit_trail
from projector.service import project_batch
from scheduler.history import desired_state_at
from scheduler.state import SchedulerState
from tests.eventually import eventually
from tests.integration.scheduler_harness import desired, running_scheduler, scheduled_of
from tests.scheduler_fixtures import make_taskset, published, registered, scheduled_facts

OLD_LOG = Path(__file__).parent.parent / "fixtures" / "logs" / "schedule-v1.jsonl"


def old_lines() -> list[bytes]:
    return [line for line in OLD_LOG.read_bytes().splitlines() if line.strip()]


def old_subject(raw: dict[str, Any], event: Event) -> str:
    """The subject a version-1 event was stored on (one per taskset and cluster)."""
    if raw["type"] == "ClusterTaskScheduled" and raw.get("version", 1) == 1:
        return f"fleet.evt.schedule.{raw['taskset']}.{raw['cluster']}"
    return event.subject


def stored(events: list[tuple[str, Event]]) -> list[StoredEvent]:
    seq = count(1)
    return [
        StoredEvent(seq=next(seq), subject=subject, stored_at=event.occurred_at, event=event)
        for subject, event in events
    ]


def old_log() -> list[StoredEvent]:
    decoder = EventDecoder()
    events = []
    for line in old_lines():
        event = decoder.decode(line)
        events.append((old_subject(orjson.loads(line), event), event))
    return stored(events)


def chunked_log() -> list[StoredEvent]:
    """The same history as today's scheduler records it: one event per decision's clusters."""
    events: list[tuple[str, Event]] = []
    for entry in old_log():
        event = entry.event
        previous = events[-1][1] if events else None
        if (
            isinstance(event, ClusterTaskScheduled)
            and isinstance(previous, ClusterTaskScheduled)
            and previous.taskset == event.taskset
            and previous.caused_by == event.caused_by
        ):
            merged = msgspec.structs.replace(previous, clusters=previous.clusters + event.clusters)
            events[-1] = (merged.subject, merged)
        else:
            events.append((event.subject, event))
    return stored(events)


def folded(log: list[StoredEvent]) -> SchedulerState:
    state = SchedulerState()
    for entry in log:
        state.apply_event(entry.seq, entry.subject, entry.stored_at, entry.event)
    return state


def test_the_old_log_holds_one_event_per_cluster_and_the_new_one_chunks_them() -> None:
    old, new = old_log(), chunked_log()
    old_scheduled = [e.event for e in old if isinstance(e.event, ClusterTaskScheduled)]
    new_scheduled = [e.event for e in new if isinstance(e.event, ClusterTaskScheduled)]
    assert [len(e.clusters) for e in old_scheduled] == [1] * 9
    assert [len(e.clusters) for e in new_scheduled] == [2, 2, 1, 2, 1, 1]
    assert all(e.version == 2 for e in old_scheduled)
    assert scheduled_facts(old_scheduled) == scheduled_facts(new_scheduled)


def test_without_its_upcaster_the_old_form_is_refused_by_name() -> None:
    line = next(line for line in old_lines() if b'"ClusterTaskScheduled"' in line)
    with pytest.raises(UndecodableEvent, match="no upcaster for ClusterTaskScheduled version 1"):
        EventDecoder({}).decode(line)


def test_the_old_and_the_chunked_log_fold_to_the_same_scheduler_state() -> None:
    old, new = folded(old_log()), folded(chunked_log())
    assert old.scheduled == new.scheduled
    assert old.generations == new.generations
    assert old.releases == new.releases
    assert old.clusters == new.clusters
    web = old.scheduled["web"]
    assert {c: (r.version, r.generation, r.overrides) for c, r in web.items()} == {
        "b": (2, 3, ("more",)),
        "c": (2, 1, ()),
    }
    assert old.scheduled["api"]["c"].removed
    assert old.generations[("c", "api")] == 2
    assert old.generations[("a", "web")] == 2


async def test_the_old_and_the_chunked_log_project_the_same_status_and_audit_rows(
    tmp_path: Path,
) -> None:
    answers = []
    for name, log in (("old", old_log()), ("new", chunked_log())):
        db = await ProjectionDb.open(tmp_path / f"{name}.db")
        try:
            await project_batch(db, [("events", entry) for entry in log])
            digests = await db.table_digests()
            trail = [
                (row.cluster, row.taskset, row.type, row.summary)
                for row in await audit_trail(db, taskset="web")
            ]
            per_cluster = [row.summary for row in await audit_trail(db, cluster="b", taskset="web")]
        finally:
            await db.close()
        answers.append((digests["cluster_status"], trail, per_cluster))
    (old_status, old_trail, old_b), (new_status, new_trail, new_b) = answers
    assert old_status == new_status
    assert old_trail == new_trail
    assert old_b == new_b
    scheduled_b = [s for s in new_b if "for b" in s]
    assert scheduled_b == [
        "web v1 for b (generation 1)",
        "web v1 for b (generation 2)",
        "web v2 for b (generation 3)",
    ]


async def test_state_at_answers_the_same_from_the_old_and_the_chunked_log() -> None:
    async def answer(log: list[StoredEvent], cluster: str, until_id: str) -> list[Any]:
        async def events() -> Any:
            for entry in log:
                yield entry
                if entry.event.id == until_id:
                    return

        state = await desired_state_at(events(), cluster)
        return [
            (t.task.taskset_name, t.task.version, t.task.generation, t.task.digest, t.verified)
            for t in state.tasks
        ]

    old, new = old_log(), chunked_log()
    moments = [e.event.id for e in old if not isinstance(e.event, ClusterTaskScheduled)]
    moments.append(old[-1].event.id)
    for cluster in ("a", "b", "c"):
        for until_id in moments:
            assert await answer(old, cluster, until_id) == await answer(new, cluster, until_id)
    assert await answer(old, "b", old[-1].event.id) == [
        ("web", 2, 3, old_digest("b", "web", 3), True)
    ]


def old_digest(cluster: str, taskset: str, generation: int) -> str:
    for line in old_lines():
        raw = orjson.loads(line)
        if raw["type"] == "ClusterTaskScheduled" and (
            raw["cluster"],
            raw["taskset"],
            raw["generation"],
        ) == (cluster, taskset, generation):
            return str(raw["digest"])
    raise AssertionError(f"no decision for {cluster}/{taskset} generation {generation}")


def test_a_chunk_is_shown_per_cluster_to_whoever_asks_about_one() -> None:
    log = chunked_log()
    chunk = next(
        e for e in log if isinstance(e.event, ClusterTaskScheduled) and len(e.event.clusters) == 2
    )
    assert isinstance(chunk.event, ClusterTaskScheduled)
    first, second = chunk.event.names()
    assert concerns(chunk.event, cluster=second, taskset=None)
    assert not concerns(chunk.event, cluster="nowhere", taskset=None)
    record = event_record("events", chunk, second)
    assert [part["cluster"] for part in record.event["clusters"]] == [second]
    assert second in record.summary
    assert first not in record.summary
    whole = event_record("events", chunk)
    assert [part["cluster"] for part in whole.event["clusters"]] == [first, second]
    assert clusters_of(chunk.event) == [first, second]


async def test_a_scheduler_started_on_the_old_log_decides_nothing_again(
    event_store: EventStore,
) -> None:
    js = event_store.nc.jetstream()
    decoder = EventDecoder()
    for line in old_lines():
        event = decoder.decode(line)
        await js.publish(
            old_subject(orjson.loads(line), event),
            line,
            stream=EVENTS_STREAM,
            headers={"Nats-Msg-Id": event.id},
        )
    before = await scheduled_of(event_store)
    assert len(before) == 9
    async with running_scheduler(event_store):

        async def repaired() -> bool:
            b, c = await desired(event_store, "b", "web"), await desired(event_store, "c", "web")
            return b is not None and c is not None

        await eventually(repaired, what="DESIRED written from the old log")
        task_b = await desired(event_store, "b", "web")
        task_c = await desired(event_store, "c", "web")
        assert task_b is not None
        assert task_c is not None
        assert (task_b.version, task_b.generation, task_b.overrides) == (2, 3, ["more"])
        assert task_b.digest == old_digest("b", "web", 3)
        assert (task_c.version, task_c.generation) == (2, 1)
    assert await scheduled_of(event_store) == before
    encoded = [encode_event(e.event) for e in await event_store_log(event_store)]
    assert all(b'"version":2' in line for line in encoded if b"ClusterTaskScheduled" in line)


async def event_store_log(store: EventStore) -> list[StoredEvent]:
    return [entry async for entry in store.read(subject="fleet.evt.schedule.>")]


async def test_an_audit_index_of_schema_1_is_rekeyed_by_cluster_keeping_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "projector.db"
    connection = sqlite3.connect(path)
    connection.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE audit (stream TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL,"
        " type TEXT NOT NULL, cluster TEXT NOT NULL, taskset TEXT NOT NULL,"
        " actor TEXT NOT NULL, correlation_id TEXT NOT NULL, causation_id TEXT NOT NULL,"
        " event_id TEXT NOT NULL, summary TEXT NOT NULL, PRIMARY KEY (stream, seq));"
        "INSERT INTO audit VALUES ('events', 7, '2026-11-24T10:00:00+00:00',"
        " 'ClusterTaskScheduled', 'a', 'web', 'scheduler', '', '', 'e7',"
        " 'web v1 for a (generation 1)');"
    )
    connection.commit()
    connection.close()

    db = await ProjectionDb.open(path)
    try:
        log = chunked_log()
        chunk = next(
            e
            for e in log
            if isinstance(e.event, ClusterTaskScheduled) and len(e.event.clusters) == 2
        )
        await project_batch(db, [("events", dataclasses.replace(chunk, seq=8))])
        rows = await audit_trail(db)
    finally:
        await db.close()
    assert isinstance(chunk.event, ClusterTaskScheduled)
    assert [(row.seq, row.cluster) for row in rows] == [
        (7, "a"),
        *((8, name) for name in chunk.event.names()),
    ]
    connection = sqlite3.connect(path)
    try:
        keys = [row[1] for row in connection.execute("PRAGMA table_info(audit)") if row[5]]
        schema = connection.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    finally:
        connection.close()
    assert keys == ["stream", "seq", "cluster"]
    assert schema == ("2",)


async def test_a_publish_to_more_clusters_than_a_chunk_writes_every_one_of_them(
    event_store: EventStore,
) -> None:
    names = [f"c{i:04d}" for i in range(2 * SCHEDULE_CHUNK + 76)]
    await event_store.append_many([Append(events=[registered(name, env="prod")]) for name in names])
    async with running_scheduler(event_store) as service:
        await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])

        async def all_written() -> bool:
            stored = await service.bus.stored_generations()
            return sum(1 for subject in stored if subject.endswith(".web")) == len(names)

        await eventually(all_written, what="every cluster's ClusterTask in DESIRED")
        stored = await service.bus.stored_generations()
    assert {subject: gen for subject, gen in stored.items() if subject.endswith(".web")} == {
        f"fleet.desired.{name}.web": 1 for name in names
    }
    chunks = [
        e.event
        for e in await event_store_log(event_store)
        if isinstance(e.event, ClusterTaskScheduled)
    ]
    assert [len(chunk.clusters) for chunk in chunks] == [SCHEDULE_CHUNK, SCHEDULE_CHUNK, 76]
    assert [name for chunk in chunks for name in chunk.names()] == names


async def test_every_chunk_is_scheduled_while_the_first_chunks_writes_are_still_on_their_way(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"c{i:04d}" for i in range(2 * SCHEDULE_CHUNK + 76)]
    await event_store.append_many([Append(events=[registered(name, env="prod")]) for name in names])
    async with running_scheduler(event_store) as service:
        gate = asyncio.Event()
        write = service.bus.write_desired_many

        async def held_writes(writes: Any, **options: Any) -> None:
            await gate.wait()
            await write(writes, **options)

        monkeypatch.setattr(service.bus, "write_desired_many", held_writes)
        await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])

        async def chunks_logged() -> int:
            log = await event_store_log(event_store)
            return sum(1 for e in log if isinstance(e.event, ClusterTaskScheduled))

        # The appends run ahead: every chunk is in the log while no ClusterTask is written.
        await eventually(
            lambda: _at_least(chunks_logged(), 3), what="all three chunks logged", within=30
        )
        assert not [s for s in await service.bus.stored_generations() if s.endswith(".web")]
        gate.set()

        async def all_written() -> bool:
            stored = await service.bus.stored_generations()
            return sum(1 for subject in stored if subject.endswith(".web")) == len(names)

        await eventually(all_written, what="every cluster's ClusterTask in DESIRED")


async def _at_least(count_of: Awaitable[int], wanted: int) -> bool:
    return await count_of >= wanted
