"""Publishing decisions: versions, "unchanged", retirement, placement checks, the size limit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

import msgspec
import pytest

from events.catalog import (
    Placement,
    Provenance,
    RolloutStrategy,
    TasksetPublished,
    TasksetRetired,
)
from events.store import EventStore, StoredEvent
from events.streams import MAX_PAYLOAD
from registry.errors import (
    HistoryUnavailable,
    TasksetAlreadyRetired,
    TasksetNotFound,
    TasksetTooLarge,
)
from registry.tasksets import (
    PublishTaskset,
    RetireTaskset,
    TasksetHistory,
    decide_publish,
    decide_retire,
    evolve,
    load_history,
)
from taskset.codec import decode_taskset
from taskset.digest import digest_of
from taskset.errors import InvalidName
from taskset.model import SourceInfo, Step, Taskset
from taskset.selectors import InvalidSelector

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def taskset(data: str = "v") -> Taskset:
    return Taskset(
        name="web",
        namespace="apps",
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "c", "namespace": "apps"},
                    "data": {"k": data},
                }
            )
        ],
        source=SourceInfo(format="yaml", digest="sha256:" + "1" * 64),
    )


def command(content: Taskset | None = None, /, **changes: object) -> PublishTaskset:
    fields: dict[str, object] = {
        "taskset": content or taskset(),
        "actor": "user:ops",
        "event_id": "0190f5a0-0000-7000-8000-000000000001",
        **changes,
    }
    return PublishTaskset(**fields)  # type: ignore[arg-type]


def published(
    history: TasksetHistory, cmd: PublishTaskset
) -> tuple[TasksetHistory, TasksetPublished]:
    [event] = decide_publish(history, cmd, NOW)
    assert isinstance(event, TasksetPublished)
    return evolve(history, event), event


def test_the_first_publish_is_version_1_and_carries_the_body_and_its_digest() -> None:
    history, event = published(TasksetHistory(name="web"), command())
    assert event.taskset_version == 1
    assert event.digest == digest_of(taskset())
    assert decode_taskset(event.body) == taskset()
    assert event.body_size == len(event.body)
    assert event.source_digest == "sha256:" + "1" * 64
    assert event.format == "yaml"
    assert (event.occurred_at, event.actor, event.subject) == (
        NOW,
        "user:ops",
        "fleet.evt.taskset.web",
    )
    assert history.version == 1


def test_identical_content_placement_and_rollout_decide_nothing() -> None:
    history, _ = published(TasksetHistory(name="web"), command())
    assert decide_publish(history, command(), NOW) == []


def test_changed_content_is_the_next_version() -> None:
    history, _ = published(TasksetHistory(name="web"), command())
    history, event = published(history, command(taskset("w")))
    assert event.taskset_version == 2
    assert history.digest == digest_of(taskset("w"))


@pytest.mark.parametrize(
    "change",
    [
        {"placement": Placement(selector="env=prod")},
        {"placement": Placement(clusters=["edge-1"])},
        {"rollout": RolloutStrategy(batch_size=2)},
        {"rollout": RolloutStrategy(pause_seconds=30)},
    ],
)
def test_the_same_content_with_other_placement_or_rollout_is_a_new_version(
    change: dict[str, object],
) -> None:
    history, _ = published(TasksetHistory(name="web"), command())
    _, event = published(history, command(**change))
    assert event.taskset_version == 2
    assert event.digest == digest_of(taskset())


def test_publishing_again_after_retirement_revives_the_taskset() -> None:
    history, _ = published(TasksetHistory(name="web"), command())
    history = evolve(history, TasksetRetired(id="x", occurred_at=NOW, actor="a", taskset="web"))
    assert history.retired
    history, event = published(history, command())
    assert event.taskset_version == 2
    assert not history.retired


def test_helm_values_and_chart_archive_travel_with_the_snapshot() -> None:
    address = "sha256:" + "a" * 64
    content = Taskset(
        name="web",
        install=taskset().install,
        source=SourceInfo(format="helm", digest=address, chart_archive=address),
    )
    _, event = published(TasksetHistory(name="web"), command(content, values={"replicas": 3}))
    assert (event.values, event.chart_archive, event.format) == ({"replicas": 3}, address, "helm")


def test_a_snapshot_over_the_message_limit_is_refused_naming_size_and_limit() -> None:
    noise = os.urandom(MAX_PAYLOAD).hex()
    with pytest.raises(TasksetTooLarge) as caught:
        decide_publish(TasksetHistory(name="web"), command(taskset(noise)), NOW)
    error = caught.value
    assert error.body_size > MAX_PAYLOAD
    assert f"{error.body_size:,} bytes compressed" in str(error)
    assert f"over the limit of {MAX_PAYLOAD:,} bytes" in str(error)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"placement": Placement(clusters=["Edge_1"])}, InvalidName),
        ({"placement": Placement(selector="env in (prod")}, InvalidSelector),
    ],
)
def test_invalid_placement_is_refused(change: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        decide_publish(TasksetHistory(name="web"), command(**change), NOW)


def test_retiring_appends_one_event_for_a_published_taskset() -> None:
    history, _ = published(TasksetHistory(name="web"), command())
    retire = RetireTaskset(name="web", reason="replaced", actor="user:ops", event_id="r1")
    [event] = decide_retire(history, retire, NOW)
    assert isinstance(event, TasksetRetired)
    assert (event.taskset, event.reason) == ("web", "replaced")


def test_retiring_what_was_never_published_or_is_retired_is_refused() -> None:
    retire = RetireTaskset(name="web", actor="user:ops", event_id="r1")
    with pytest.raises(TasksetNotFound, match="never published"):
        decide_retire(TasksetHistory(name="web"), retire, NOW)
    history, _ = published(TasksetHistory(name="web"), command())
    retired = evolve(history, decide_retire(history, retire, NOW)[0])
    with pytest.raises(TasksetAlreadyRetired, match="already retired"):
        decide_retire(retired, retire, NOW)


class _LogThatLosesEvents:
    """A log whose subject says there are events, but whose reads come back empty."""

    async def subject_version(self, subject: str) -> int:
        return 7

    async def read(self, **_: object) -> AsyncIterator[StoredEvent]:
        nothing: list[StoredEvent] = []
        for stored in nothing:
            yield stored


async def test_a_history_that_cannot_be_read_back_is_not_decided_on() -> None:
    store = cast(EventStore, _LogThatLosesEvents())
    with pytest.raises(HistoryUnavailable, match="up to sequence 7, but reading it back stopped"):
        await load_history(store, "web")


def test_a_new_chart_version_or_commit_is_a_new_version_even_when_it_renders_the_same() -> None:
    chart_1 = Provenance(kind="oci", url="oci://r/charts/web", chart="web", chart_version="1.0.0")
    history, first = published(TasksetHistory(name="web"), command(provenance=chart_1))
    assert first.provenance == chart_1
    assert decide_publish(history, command(provenance=chart_1), NOW) == []
    chart_2 = msgspec.structs.replace(chart_1, chart_version="1.0.1", digest="sha256:2")
    _, second = published(history, command(provenance=chart_2))
    assert (second.taskset_version, second.provenance) == (2, chart_2)
    assert decide_publish(history, command(), NOW) == [], "an upload compares content only"
