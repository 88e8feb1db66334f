"""The catalog's wire form: stored fixtures decode, upcasting works, garbage is named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.catalog import EVENT_TYPES, ClusterRegistered, Event, TaskApplied
from events.codec import EventDecoder, current_version_of, encode_event
from events.errors import UndecodableEvent
from events.ids import event_id_time_ms, new_event_id

FIXTURES = Path(__file__).parent.parent / "fixtures" / "events"


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.json"))


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.stem)
def test_every_stored_fixture_still_decodes_to_its_type(path: Path) -> None:
    type_name, _, version = path.stem.partition(".v")
    event = EventDecoder().decode(path.read_bytes())
    assert event.type_name == type_name
    assert event.version == current_version_of(EVENT_TYPES[type_name])
    assert int(version) <= event.version


def test_every_event_type_and_current_version_has_a_stored_fixture() -> None:
    stored = {path.stem for path in fixture_files()}
    expected = {f"{name}.v{current_version_of(cls)}" for name, cls in EVENT_TYPES.items()}
    assert expected <= stored, f"missing fixtures: {sorted(expected - stored)}"


def test_encode_then_decode_gives_an_equal_event() -> None:
    event = ClusterRegistered(
        id=new_event_id(),
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        actor="user:ops",
        cluster="edge-7",
        labels={"env": "prod"},
    )
    assert EventDecoder().decode(encode_event(event)) == event
    assert event.subject == "fleet.evt.cluster.edge-7"


def test_reports_live_under_the_report_subject_of_their_cluster() -> None:
    report = TaskApplied(
        id=new_event_id(),
        occurred_at=datetime.now(UTC),
        actor="cluster:edge-1",
        cluster="edge-1",
        taskset="web",
    )
    assert report.subject == "fleet.report.edge-1.web"


def test_an_older_version_is_upcast_before_decoding() -> None:
    old = (
        b'{"type":"ClusterRegistered","version":0,"id":"x","occurred_at":"2026-01-01T00:00:00Z",'
        b'"actor":"a","name":"edge-1"}'
    )

    def rename_name_to_cluster(raw: dict[str, Any]) -> dict[str, Any]:
        raw["cluster"] = raw.pop("name")
        return raw

    decoder = EventDecoder({("ClusterRegistered", 0): rename_name_to_cluster})
    event = decoder.decode(old)
    assert isinstance(event, ClusterRegistered)
    assert event.cluster == "edge-1"
    assert event.version == 1


def test_a_missing_upcaster_is_reported_not_guessed() -> None:
    old = b'{"type":"ClusterRegistered","version":0,"id":"x","occurred_at":"2026-01-01T00:00:00Z"}'
    with pytest.raises(UndecodableEvent, match="no upcaster"):
        EventDecoder({}).decode(old, seq=7)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\xff not json", "not an event envelope"),
        (b'{"type":"NoSuchEvent","version":1}', "unknown event type"),
        (
            b'{"type":"ClusterRegistered","version":1,"id":"x","actor":"a"}',
            "missing required field",
        ),
        (b'{"type":"ClusterRegistered","version":9}', "newer than this build"),
        (b"[1,2,3]", "not an event envelope"),
    ],
)
def test_garbage_is_refused_with_its_sequence_and_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableEvent, match=reason) as info:
        EventDecoder().decode(data, seq=42, subject="fleet.evt.x.y")
    assert info.value.seq == 42
    assert "message 42" in str(info.value)


def test_event_ids_sort_by_creation_time() -> None:
    first = new_event_id(now_ms=1_700_000_000_000)
    second = new_event_id(now_ms=1_700_000_000_001)
    assert first < second
    assert event_id_time_ms(first) == 1_700_000_000_000


def test_events_are_frozen() -> None:
    event: Event = ClusterRegistered(id="x", occurred_at=datetime.now(UTC), actor="a", cluster="c")
    with pytest.raises(AttributeError):
        event.actor = "b"  # type: ignore[misc]
