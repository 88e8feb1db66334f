"""The project registry: create projects (tenants) and set their quotas.

A project is an aggregate on `fleet.evt.project.<name>`. The `default` project always exists
(everything written before projects existed belongs to it) and has no event of its own and no
quotas. Decisions are pure (`decide_create`, `decide_quotas` over a `ProjectRecord` folded by
`evolve_project`); the services load the project's own events, decide, and append
conditionally on the subject's last sequence.

Quotas are checked where things are created (`check_quota`): the check reads the project's
usage first and refuses before anything is appended, so a refused command writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from events.catalog import Event, ProjectCreated, ProjectQuotasSet, ProjectSharesSet
from events.ids import new_event_id
from events.store import EventStore
from events.subjects import EVENTS_PREFIX, event_subject
from registry.errors import InvalidCommand, ProjectExists, ProjectNotFound, QuotaExceeded
from taskset.errors import InvalidName
from taskset.projects import DEFAULT_PROJECT, ProjectQuotas, check_project_name, project_of

PROJECT_AGGREGATE = "project"
MAX_DESCRIPTION = 200


class ProjectRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    exists: bool = False
    description: str = ""
    quotas: ProjectQuotas = msgspec.field(default_factory=ProjectQuotas)
    created_at: datetime | None = None
    created_by: str = ""
    shared_tasksets: list[str] = msgspec.field(default_factory=list)
    """Full names of the tasksets it shares read-only with every other project."""
    shared_blueprints: list[str] = msgspec.field(default_factory=list)


DEFAULT_RECORD = ProjectRecord(
    name=DEFAULT_PROJECT, exists=True, description="the hub's own project"
)


def evolve_project(record: ProjectRecord, event: Event) -> ProjectRecord:
    match event:
        case ProjectCreated():
            return ProjectRecord(
                name=event.project,
                exists=True,
                description=event.description,
                quotas=event.quotas,
                created_at=event.occurred_at,
                created_by=event.actor,
            )
        case ProjectQuotasSet():
            return msgspec.structs.replace(record, quotas=event.quotas)
        case ProjectSharesSet():
            return msgspec.structs.replace(
                record,
                shared_tasksets=list(event.tasksets),
                shared_blueprints=list(event.blueprints),
            )
    return record


def _checked_quotas(quotas: ProjectQuotas) -> ProjectQuotas:
    problems = quotas.problems()
    if problems:
        raise InvalidCommand("; ".join(problems), {"quotas": msgspec.to_builtins(quotas)})
    return quotas


def _envelope(now: datetime, actor: str) -> dict[str, object]:
    event_id = new_event_id(int(now.timestamp() * 1000))
    return {"id": event_id, "occurred_at": now, "actor": actor, "correlation_id": event_id}


def decide_create(
    record: ProjectRecord,
    *,
    description: str,
    quotas: ProjectQuotas,
    actor: str,
    now: datetime,
) -> list[Event]:
    try:
        check_project_name(record.name)
    except InvalidName as e:
        raise InvalidCommand(str(e)) from e
    if record.exists:
        raise ProjectExists(f"project {record.name} exists already")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidCommand(
            f"a project's description is at most {MAX_DESCRIPTION} characters, "
            f"got {len(description)}"
        )
    return [
        ProjectCreated(
            **_envelope(now, actor),  # type: ignore[arg-type]
            project=record.name,
            description=description,
            quotas=_checked_quotas(quotas),
        )
    ]


def decide_quotas(
    record: ProjectRecord, quotas: ProjectQuotas, *, actor: str, now: datetime
) -> list[Event]:
    if record.name == DEFAULT_PROJECT:
        raise InvalidCommand("the default project has no quotas; create a project to set some")
    if not record.exists:
        raise ProjectNotFound(f"no project named {record.name}")
    if _checked_quotas(quotas) == record.quotas:
        return []
    return [
        ProjectQuotasSet(
            **_envelope(now, actor),  # type: ignore[arg-type]
            project=record.name,
            quotas=quotas,
        )
    ]


def decide_shares(
    record: ProjectRecord,
    tasksets: Iterable[str],
    blueprints: Iterable[str],
    *,
    actor: str,
    now: datetime,
) -> list[Event]:
    """Share exactly these (full names of the project's own) tasksets and blueprints."""
    if not record.exists:
        raise ProjectNotFound(f"no project named {record.name}")
    wanted_tasksets, wanted_blueprints = sorted(set(tasksets)), sorted(set(blueprints))
    for name in (*wanted_tasksets, *wanted_blueprints):
        if project_of(name) != record.name:
            raise InvalidCommand(
                f"project {record.name} can share only its own objects, not {name}"
            )
    if (wanted_tasksets, wanted_blueprints) == (record.shared_tasksets, record.shared_blueprints):
        return []
    return [
        ProjectSharesSet(
            **_envelope(now, actor),  # type: ignore[arg-type]
            project=record.name,
            tasksets=wanted_tasksets,
            blueprints=wanted_blueprints,
        )
    ]


def check_quota(project: ProjectRecord, quota: str, used: int, adding: int = 1) -> None:
    """Refuse (`QuotaExceeded`) when `used + adding` would pass the project's `quota`."""
    limit = int(getattr(project.quotas, quota))
    if limit and used + adding > limit:
        raise QuotaExceeded(project.name, quota, limit, used, adding)


# --- services ---------------------------------------------------------------------------------


def project_subject(name: str) -> str:
    return event_subject(PROJECT_AGGREGATE, name)


async def load_project(store: EventStore, name: str) -> tuple[ProjectRecord, int]:
    """The project as its own events say, and the sequence to expect when appending."""
    if name != DEFAULT_PROJECT:
        try:
            check_project_name(name)
        except InvalidName as e:
            raise InvalidCommand(str(e)) from e
    subject = project_subject(name)
    expected = await store.subject_version(subject)
    record = _unborn(name)
    if expected:
        async for stored in store.read(subject=subject):
            if stored.seq <= expected:
                record = evolve_project(record, stored.event)
    return record, expected


async def existing_project(store: EventStore, name: str) -> ProjectRecord:
    record, _ = await load_project(store, name)
    if not record.exists:
        raise ProjectNotFound(f"no project named {name}; `fleetbus project ls` lists them")
    return record


async def create_project(
    store: EventStore,
    name: str,
    *,
    description: str = "",
    quotas: ProjectQuotas | None = None,
    actor: str,
    now: datetime,
) -> ProjectRecord:
    if name == DEFAULT_PROJECT:
        raise ProjectExists("project default exists already (every hub has it)")
    record, expected = await load_project(store, name)
    events = decide_create(
        record, description=description, quotas=quotas or ProjectQuotas(), actor=actor, now=now
    )
    await store.append(events, expected=expected)
    return _folded(record, events)


async def set_project_quotas(
    store: EventStore, name: str, quotas: ProjectQuotas, *, actor: str, now: datetime
) -> ProjectRecord:
    record, expected = await load_project(store, name)
    events = decide_quotas(record, quotas, actor=actor, now=now)
    if events:
        await store.append(events, expected=expected)
    return _folded(record, events)


async def set_project_shares(
    store: EventStore,
    name: str,
    tasksets: Iterable[str],
    blueprints: Iterable[str],
    *,
    actor: str,
    now: datetime,
) -> ProjectRecord:
    record, expected = await load_project(store, name)
    events = decide_shares(record, tasksets, blueprints, actor=actor, now=now)
    if events:
        await store.append(events, expected=expected)
    return _folded(record, events)


async def list_projects(store: EventStore) -> list[ProjectRecord]:
    """Every project, `default` first, then by name."""
    records: dict[str, ProjectRecord] = {}
    async for stored in store.read(subject=f"{EVENTS_PREFIX}.{PROJECT_AGGREGATE}.>"):
        name = getattr(stored.event, "project", None)
        if isinstance(name, str):
            records[name] = evolve_project(records.get(name, _unborn(name)), stored.event)
    default = records.pop(DEFAULT_PROJECT, DEFAULT_RECORD)
    return [default, *(r for _, r in sorted(records.items()) if r.exists)]


def _unborn(name: str) -> ProjectRecord:
    """A project before its first event (`default` exists without one)."""
    return DEFAULT_RECORD if name == DEFAULT_PROJECT else ProjectRecord(name=name)


def _folded(record: ProjectRecord, events: Iterable[Event]) -> ProjectRecord:
    for event in events:
        record = evolve_project(record, event)
    return record
