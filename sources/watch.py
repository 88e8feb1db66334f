"""Standing sources as data: their state folded from the log, and the pure decisions on them.

- `decide_add` / `decide_remove`: the events `fleetbus source add|rm` append;
- `evolve`: a source's definition and failure record from its events;
- `retry_delay`: the backoff after failed checks, doubling from `FIRST_RETRY_S` up to the
  source's interval;
- `decide_failure`: the `SourceFailed` to record for a failed check, or none when the same
  reason was recorded last (a source down for a day records it once, not once per retry).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from events.catalog import Event, Provenance, SourceAdded, SourceFailed, SourceRemoved
from events.ids import new_event_id
from sources.errors import InvalidSourceReference, SourceNotFound, Stage
from sources.references import SourceRef, check_reference
from taskset.names import check_name

FIRST_RETRY_S = 5.0
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class SourceRecord:
    definition: SourceAdded
    attempts: int = 0
    """Failed checks in a row."""
    last_reason: str = ""
    """The reason of the last recorded `SourceFailed` (until a check succeeds)."""
    last_failed_at: datetime | None = None
    last_checked_at: datetime | None = None
    next_check_at: datetime | None = None
    """None: check as soon as possible."""
    settled: bool = False
    """This definition was checked successfully once: later checks may skip what the
    version published last already holds."""
    last_provenance: Provenance | None = None
    last_version: int = 0

    @property
    def name(self) -> str:
        return self.definition.source

    @property
    def reference(self) -> SourceRef:
        d = self.definition
        return SourceRef(
            kind=d.kind,
            url=d.url,
            chart=d.chart,
            version=d.chart_version,
            ref=d.ref,
            path=d.path,
            plain_http=d.plain_http,
        )


@dataclass
class SourcesState:
    sources: dict[str, SourceRecord] = field(default_factory=dict)


def evolve(state: SourcesState, event: Event) -> SourcesState:
    match event:
        case SourceAdded():
            state.sources[event.source] = SourceRecord(definition=event)
        case SourceRemoved():
            state.sources.pop(event.source, None)
        case SourceFailed():
            record = state.sources.get(event.source)
            if record is not None:
                state.sources[event.source] = replace(
                    record, last_reason=event.reason, last_failed_at=event.occurred_at
                )
    return state


def decide_add(
    definition: SourceAdded, *, existing: SourceRecord | None, taskset_owner: str | None
) -> list[Event]:
    """`definition` if it is a valid standing source; `taskset_owner` is the source already
    publishing the same taskset, if any (two sources would take turns overwriting it)."""
    check_name("source", definition.source)
    check_name("taskset", definition.taskset)
    check_reference(
        SourceRef(
            kind=definition.kind,
            url=definition.url,
            chart=definition.chart,
            version=definition.chart_version,
            ref=definition.ref,
            path=definition.path,
            plain_http=definition.plain_http,
        )
    )
    if not MIN_INTERVAL_S <= definition.interval_s <= MAX_INTERVAL_S:
        raise InvalidSourceReference(
            f"interval must be between {MIN_INTERVAL_S:g}s and {MAX_INTERVAL_S:g}s, "
            f"got {definition.interval_s:g}s"
        )
    if taskset_owner is not None and taskset_owner != definition.source:
        raise InvalidSourceReference(
            f"taskset {definition.taskset} is already published by source {taskset_owner}"
        )
    if existing is not None and _same_definition(existing.definition, definition):
        return []
    return [definition]


def _same_definition(a: SourceAdded, b: SourceAdded) -> bool:
    ignored = {"id", "occurred_at", "actor", "correlation_id", "causation_id"}
    return all(
        getattr(a, name) == getattr(b, name) for name in a.__struct_fields__ if name not in ignored
    )


def decide_remove(
    name: str, *, existing: SourceRecord | None, actor: str, now: datetime
) -> list[Event]:
    if existing is None:
        raise SourceNotFound(f"no standing source named {name}")
    event_id = new_event_id(int(now.timestamp() * 1000))
    return [
        SourceRemoved(
            id=event_id,
            occurred_at=now,
            actor=actor,
            correlation_id=event_id,
            causation_id=event_id,
            source=name,
        )
    ]


def retry_delay(attempts: int, interval_s: float) -> float:
    """Seconds before checking again after `attempts` failed checks in a row."""
    if attempts <= 0:
        return interval_s
    return min(interval_s, FIRST_RETRY_S * float(2 ** min(attempts - 1, 30)))


def decide_failure(
    record: SourceRecord,
    *,
    reason: str,
    stage: Stage,
    candidate: str,
    now: datetime,
) -> tuple[SourceRecord, list[Event]]:
    """The record after a failed check, and the `SourceFailed` to append (if a new reason)."""
    attempts = record.attempts + 1
    delay = retry_delay(attempts, record.definition.interval_s)
    updated = replace(
        record,
        attempts=attempts,
        last_checked_at=now,
        next_check_at=now + timedelta(seconds=delay),
    )
    if reason == record.last_reason:
        return updated, []
    event_id = new_event_id(int(now.timestamp() * 1000))
    event = SourceFailed(
        id=event_id,
        occurred_at=now,
        actor=f"source:{record.name}",
        correlation_id=event_id,
        causation_id=event_id,
        source=record.name,
        taskset=record.definition.taskset,
        reason=reason,
        stage=stage,
        attempts=attempts,
        retry_in_s=delay,
        candidate=candidate,
    )
    return replace(updated, last_reason=reason, last_failed_at=now), [event]


def after_success(
    record: SourceRecord, *, now: datetime, provenance: Provenance | None, version: int
) -> SourceRecord:
    interval = timedelta(seconds=record.definition.interval_s)
    return replace(
        record,
        attempts=0,
        last_reason="",
        last_checked_at=now,
        next_check_at=now + interval,
        settled=True,
        last_provenance=provenance or record.last_provenance,
        last_version=version or record.last_version,
    )


def due(record: SourceRecord, now: datetime) -> bool:
    return record.next_check_at is None or record.next_check_at <= now
