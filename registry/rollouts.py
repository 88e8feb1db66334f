"""Resuming a halted rollout (the scheduler halts them; people resume them).

The rollout of a taskset is an aggregate on `fleet.evt.rollout.<taskset>`. Resuming appends
`RolloutResumed` for the halted version, conditional on the subject's last sequence, so a
resume decided against a stale view (the scheduler moved on meanwhile) is refused. Failures
seen before the resume no longer count towards the rollout's failure threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from events.catalog import (
    Event,
    RolloutAdvanced,
    RolloutHalted,
    RolloutResumed,
    TasksetPublished,
)
from events.ids import new_event_id
from events.store import EventStore
from events.subjects import event_subject
from registry.errors import RolloutNotHalted
from taskset.names import check_name


@dataclass(frozen=True)
class RolloutHistory:
    taskset: str
    latest_version: int = 0
    version: int = 0
    halted: bool = False
    wave: int = 0
    failed: tuple[str, ...] = ()


def evolve_rollout(history: RolloutHistory, event: Event) -> RolloutHistory:
    match event:
        case TasksetPublished():
            return RolloutHistory(taskset=history.taskset, latest_version=event.taskset_version)
        case RolloutAdvanced():
            return RolloutHistory(
                taskset=history.taskset,
                latest_version=history.latest_version,
                version=event.taskset_version,
                wave=event.wave,
            )
        case RolloutHalted():
            return RolloutHistory(
                taskset=history.taskset,
                latest_version=history.latest_version,
                version=event.taskset_version,
                halted=True,
                wave=event.wave,
                failed=tuple(event.failed),
            )
        case RolloutResumed():
            return RolloutHistory(
                taskset=history.taskset,
                latest_version=history.latest_version,
                version=event.taskset_version,
                wave=history.wave,
            )
    return history


def decide_resume(
    history: RolloutHistory, *, actor: str, now: datetime, correlation_id: str = ""
) -> list[Event]:
    if not history.halted or history.version != history.latest_version:
        raise RolloutNotHalted(f"the rollout of taskset {history.taskset} is not halted")
    event_id = new_event_id(int(now.timestamp() * 1000))
    return [
        RolloutResumed(
            id=event_id,
            occurred_at=now,
            actor=actor,
            correlation_id=correlation_id or event_id,
            taskset=history.taskset,
            taskset_version=history.version,
        )
    ]


async def load_rollout(store: EventStore, taskset: str) -> tuple[RolloutHistory, int]:
    check_name("taskset", taskset)
    history = RolloutHistory(taskset=taskset)
    latest: TasksetPublished | None = None
    async for stored in store.read(subject=event_subject("taskset", taskset)):
        if isinstance(stored.event, TasksetPublished):
            latest = stored.event
    if latest is not None:
        history = evolve_rollout(history, latest)
    subject = event_subject("rollout", taskset)
    expected = await store.subject_version(subject)
    if expected:
        async for stored in store.read(subject=subject):
            if stored.seq <= expected:
                history = evolve_rollout(history, stored.event)
    return history, expected


async def resume_rollout(
    store: EventStore, taskset: str, *, actor: str, now: datetime, correlation_id: str = ""
) -> RolloutResumed:
    history, expected = await load_rollout(store, taskset)
    events = decide_resume(history, actor=actor, now=now, correlation_id=correlation_id)
    await store.append(events, expected=expected)
    event = events[0]
    assert isinstance(event, RolloutResumed)
    return event
