"""R5 on the bus: garbage where the hub listens, and appends the log must refuse.

Edges may publish their own inventory digests (`fleet.inventory.<cluster>`), so the hub's
anti-entropy service reads bytes an edge controls: none of them may stop it. Appends that break
the log's rules (too large, too many, stale, or an attempt to purge or delete history) are
refused with a typed error. In every case, the hub's streams hold exactly what they held before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
import pytest

from events.catalog import ClusterLabelsChanged, ClusterRegistered
from events.errors import AppendRefused, ConcurrencyConflict, PayloadTooLarge
from events.ids import new_event_id
from events.inventory import InventoryDigest, desired_state_digest, encode_inventory
from events.store import EventStore
from events.streams import DESIRED_STREAM, EVENTS_STREAM, MAX_PAYLOAD, REPORTS_STREAM
from events.tasks import cancel_and_wait
from scheduler.antientropy import AntiEntropyService
from taskset.errors import FleetbusError
from tests.eventually import eventually

STREAMS = (EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM)


async def last_sequences(store: EventStore) -> dict[str, int]:
    return {
        stream: int((await store.stream_info(stream))["state"]["last_seq"]) for stream in STREAMS
    }


def registered(cluster: str) -> ClusterRegistered:
    return ClusterRegistered(
        id=new_event_id(), occurred_at=datetime.now(UTC), actor="user:test", cluster=cluster
    )


def valid_inventory(cluster: str) -> bytes:
    return encode_inventory(
        InventoryDigest(
            cluster=cluster, sent_at=datetime.now(UTC), desired_digest=desired_state_digest({})
        )
    )


GARBAGE_INVENTORIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not-json", b"\x00\x01\x02 not json"),
    ("invalid-utf8-in-a-string", b'{"cluster": "\xff\xfe", "sent_at": "2026-01-01T00:00:00Z"}'),
    ("json-array", b"[1, 2, 3]"),
    ("wrong-field-types", b'{"cluster": 7, "sent_at": "yesterday", "desired": []}'),
    (
        "desired-entries-malformed",
        b'{"cluster": "a", "sent_at": "2026-01-01T00:00:00Z", "desired": {"web": ["x", null, 3]}}',
    ),
    ("names-another-cluster", valid_inventory("someone-else")),
    ("deeply-nested", b'{"cluster": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    ("large", b'{"cluster": "a", "pad": "' + b"x" * (4 << 20) + b'"}'),
]


@pytest.mark.parametrize(
    "garbage", [g for _, g in GARBAGE_INVENTORIES], ids=[n for n, _ in GARBAGE_INVENTORIES]
)
async def test_garbage_inventory_digests_do_not_stop_anti_entropy_nor_write_anything(
    event_store: EventStore, garbage: bytes
) -> None:
    service = AntiEntropyService(event_store)
    before = await last_sequences(event_store)
    task = asyncio.create_task(service.run(), name="anti-entropy")

    async def digest_seen(cluster: str) -> bool:
        """Send a valid digest (again: core NATS drops what nobody listens to yet)."""
        if cluster in service.last_seen or task.done():
            return True
        await event_store.nc.publish(f"fleet.inventory.{cluster}", valid_inventory(cluster))
        return False

    try:
        await eventually(lambda: digest_seen("first"), "the service listening", 60, 0.1)
        await event_store.nc.publish("fleet.inventory.a", garbage)
        await eventually(lambda: digest_seen("probe"), "a valid digest after the garbage", 60, 0.1)
        assert not task.done(), f"anti-entropy stopped: {task.exception()!r}"
        assert "a" not in service.last_seen
    finally:
        await cancel_and_wait([task])
    assert await last_sequences(event_store) == before


@dataclass(frozen=True)
class BadAppend:
    id: str
    attempt: Callable[[EventStore], Awaitable[object]]
    refused_with: type[Exception]
    sets_up: int = 0
    """Events the attempt appends on purpose first (something to delete, a version to miss)."""


async def append_oversized(store: EventStore) -> object:
    event = ClusterLabelsChanged(
        id=new_event_id(),
        occurred_at=datetime.now(UTC),
        actor="user:test",
        cluster="big",
        labels={"blob": "x" * (MAX_PAYLOAD + 1)},
    )
    return await store.append([event])


async def append_too_many(store: EventStore) -> object:
    return await store.append([registered(f"c{i}") for i in range(1001)])


async def append_stale(store: EventStore) -> object:
    await store.append([registered("stale")], expected=0)
    return await store.append([registered("stale")], expected=0)


async def purge_events(store: EventStore) -> object:
    return await store.api_request(f"STREAM.PURGE.{EVENTS_STREAM}", {})


async def delete_an_event(store: EventStore) -> object:
    await store.append([registered("kept")])
    seq = await store.last_sequence()
    return await store.api_request(f"STREAM.MSG.DELETE.{EVENTS_STREAM}", {"seq": seq})


async def garbage_stream_update(store: EventStore) -> object:
    return await store.api_request(f"STREAM.UPDATE.{EVENTS_STREAM}", {"name": 7, "subjects": "x"})


async def raw_publish_over_max_payload(store: EventStore) -> object:
    await store.nc.publish("fleet.evt.cluster.huge", b"x" * (MAX_PAYLOAD + 1))
    await store.nc.flush()
    return None


BAD_APPENDS = [
    BadAppend("event-over-the-payload-limit", append_oversized, PayloadTooLarge),
    BadAppend("command-over-1000-events", append_too_many, AppendRefused),
    BadAppend("stale-conditional-append", append_stale, ConcurrencyConflict, sets_up=1),
    BadAppend("purge-the-log", purge_events, AppendRefused),
    BadAppend("delete-an-event", delete_an_event, AppendRefused, sets_up=1),
    BadAppend("garbage-stream-config", garbage_stream_update, AppendRefused),
    BadAppend("raw-message-over-max-payload", raw_publish_over_max_payload, nats.errors.Error),
]


@pytest.mark.parametrize("case", BAD_APPENDS, ids=lambda case: case.id)
async def test_an_append_that_breaks_the_logs_rules_is_refused_and_changes_nothing(
    event_store: EventStore, case: BadAppend
) -> None:
    await event_store.append([registered("existing")])
    before = await event_store.stream_info()
    others = await last_sequences(event_store)
    with pytest.raises(case.refused_with):
        await case.attempt(event_store)
    after = await event_store.stream_info()
    assert after["config"] == before["config"]
    assert after["state"]["first_seq"] == before["state"]["first_seq"], "history was removed"
    assert after["state"]["last_seq"] == before["state"]["last_seq"] + case.sets_up
    assert after["state"]["messages"] == before["state"]["messages"] + case.sets_up
    assert {k: v for k, v in (await last_sequences(event_store)).items() if k != EVENTS_STREAM} == {
        k: v for k, v in others.items() if k != EVENTS_STREAM
    }


def test_every_bad_append_is_refused_with_a_fleetbus_error_but_the_clients_own_limit() -> None:
    for case in BAD_APPENDS:
        if case.id != "raw-message-over-max-payload":
            assert issubclass(case.refused_with, FleetbusError), case.id
