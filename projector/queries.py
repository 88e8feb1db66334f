"""Reads of the projection shared by the CLI and the HTTP API: plain SQL, no writes.

Each function takes anything with `fetch_all` (the read-only `ProjectionDb`), so the API and
the CLI ask the same questions the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import orjson

from taskset.projects import DEFAULT_PROJECT
from taskset.projects import SEPARATOR as PROJECT_SEPARATOR

Row = dict[str, Any]


class Reader(Protocol):
    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


class StatusRow(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    cluster: str
    state: str
    desired_version: int | None = None
    desired_generation: int | None = None
    desired_digest: str | None = None
    applied_version: int | None = None
    applied_generation: int | None = None
    applied_digest: str | None = None
    removed: bool = False
    wave: int | None = None
    overrides: list[str] = msgspec.field(default_factory=list)
    drift_count: int = 0
    last_report_at: str | None = None
    error: str | None = None


class ClusterRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    labels: dict[str, str]
    registered: bool
    registered_at: str


class RolloutRow(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    wave: int
    total_waves: int
    state: str
    failed: list[str]
    reason: str
    applied: int
    targets: int


class AuditRow(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    seq: int
    time: str
    type: str
    cluster: str
    taskset: str
    actor: str
    correlation_id: str
    causation_id: str
    event_id: str
    summary: str


async def fleet_status(db: Reader, taskset: str | None = None) -> list[StatusRow]:
    """Per taskset and registered cluster: desired and applied version, state, drift."""
    sql = (
        "SELECT s.* FROM cluster_status s JOIN clusters c ON c.name = s.cluster"
        " WHERE c.registered = 1"
    )
    params: list[Any] = []
    if taskset is not None:
        sql += " AND s.taskset = ?"
        params.append(taskset)
    sql += " ORDER BY s.taskset, s.cluster"
    rows = await db.fetch_all(sql, params)
    return [_status_row(row) for row in rows]


def _status_row(row: Row) -> StatusRow:
    return StatusRow(
        taskset=row["taskset"],
        cluster=row["cluster"],
        state=row["state"],
        desired_version=row["desired_version"],
        desired_generation=row["desired_generation"],
        desired_digest=row["desired_digest"],
        applied_version=row["applied_version"],
        applied_generation=row["applied_generation"],
        applied_digest=row["applied_digest"],
        removed=bool(row["removed"]),
        wave=row["wave"],
        overrides=orjson.loads(row["overrides"]) if row["overrides"] else [],
        drift_count=row["drift_count"],
        last_report_at=row["last_report_at"],
        error=row["refused_reason"]
        if row["state"] == "refused"
        else (row["failed_reason"] if row["state"] == "failed" else None),
    )


async def clusters(db: Reader, *, include_deregistered: bool = False) -> list[ClusterRow]:
    sql = "SELECT * FROM clusters"
    if not include_deregistered:
        sql += " WHERE registered = 1"
    rows = await db.fetch_all(sql + " ORDER BY name")
    return [_cluster_row(row) for row in rows]


def _cluster_row(row: Row) -> ClusterRow:
    return ClusterRow(
        name=row["name"],
        labels=orjson.loads(row["labels"]),
        registered=bool(row["registered"]),
        registered_at=row["registered_at"],
    )


CELL_STATES = ("pending", "applied", "failed", "drifted", "refused", "removing", "unscheduled")
"""The states a placement can be in (`projector.projection.status_state`), removed left out."""


class LabelTest(msgspec.Struct, frozen=True, kw_only=True):
    """One requirement of a label selector: `operator` is `=`, `!=`, `in`, `notin`, `exists`
    or `!` (the operators of `taskset.selectors`)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


class ClusterQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which registered clusters a page lists; every part set must hold."""

    name: str = ""
    """A part of the cluster's name."""
    labels: tuple[LabelTest, ...] = ()
    state: str = ""
    """At least one of its placements is in this state (one of `CELL_STATES`)."""
    taskset: str = ""
    """The taskset is placed on it (with `state`: that taskset's placement is in it)."""
    project: str | None = None
    """Only the clusters of this project (`taskset.projects`: the default project's names carry
    no `--` prefix, another's start with `<project>--`); None: every project's."""


def _label_sql(test: LabelTest) -> tuple[str, list[Any]]:
    path = '$."' + test.key + '"'
    value = "json_extract(c.labels, ?)"
    match test.operator:
        case "=":
            return f"{value} = ?", [path, test.values[0]]
        case "!=":
            return f"{value} IS NOT ?", [path, test.values[0]]
        case "in" | "notin":
            marks = ", ".join("?" for _ in test.values)
            if test.operator == "in":
                return f"{value} IN ({marks})", [path, *test.values]
            return (
                f"({value} IS NULL OR {value} NOT IN ({marks}))",
                [path, path, *test.values],
            )
        case "exists":
            return "json_type(c.labels, ?) IS NOT NULL", [path]
        case "!":
            return "json_type(c.labels, ?) IS NULL", [path]
    raise ValueError(f"unknown label operator {test.operator!r}")


def _project_sql(project: str) -> tuple[str, list[Any]]:
    """SQL keeping the clusters `c` of `project` (as `taskset.projects.project_of` reads names)."""
    if project == DEFAULT_PROJECT:
        return "instr(c.name, ?) IN (0, 1)", [PROJECT_SEPARATOR]
    prefix = project + PROJECT_SEPARATOR
    return "substr(c.name, 1, ?) = ?", [len(prefix), prefix]


def _cluster_where(query: ClusterQuery) -> tuple[str, list[Any]]:
    clauses = ["c.registered = 1"]
    params: list[Any] = []
    if query.project is not None:
        clause, values = _project_sql(query.project)
        clauses.append(clause)
        params.extend(values)
    if query.name:
        escaped = query.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("c.name LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    for test in query.labels:
        clause, values = _label_sql(test)
        clauses.append(clause)
        params.extend(values)
    if query.state or query.taskset:
        inner = ["s.cluster = c.name", "s.removed = 0"]
        if query.state:
            inner.append("s.state = ?")
            params.append(query.state)
        if query.taskset:
            inner.append("s.taskset = ?")
            params.append(query.taskset)
        clauses.append(f"EXISTS (SELECT 1 FROM cluster_status s WHERE {' AND '.join(inner)})")
    return " WHERE " + " AND ".join(clauses), params


async def cluster_names(db: Reader, query: ClusterQuery) -> list[str]:
    """Every registered cluster `query` selects, by name."""
    where, params = _cluster_where(query)
    rows = await db.fetch_all(f"SELECT c.name FROM clusters c{where} ORDER BY c.name", params)
    return [str(row["name"]) for row in rows]


async def cluster_page(
    db: Reader, query: ClusterQuery, offset: int, limit: int
) -> tuple[list[ClusterRow], int]:
    """One page of the clusters `query` selects, by name, and how many it selects in all."""
    where, params = _cluster_where(query)
    total = await db.fetch_all(f"SELECT count(*) AS n FROM clusters c{where}", params)
    rows = await db.fetch_all(
        f"SELECT c.* FROM clusters c{where} ORDER BY c.name LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [_cluster_row(row) for row in rows], int(total[0]["n"])


async def clusters_named(db: Reader, names: Sequence[str]) -> list[ClusterRow]:
    if not names:
        return []
    marks = ", ".join("?" for _ in names)
    rows = await db.fetch_all(
        f"SELECT * FROM clusters WHERE name IN ({marks}) ORDER BY name", list(names)
    )
    return [_cluster_row(row) for row in rows]


async def status_of_clusters(db: Reader, names: Sequence[str]) -> list[StatusRow]:
    """The placements on the clusters named (removals that finished left out)."""
    if not names:
        return []
    marks = ", ".join("?" for _ in names)
    rows = await db.fetch_all(
        f"SELECT * FROM cluster_status WHERE cluster IN ({marks}) AND state != 'removed'"
        " ORDER BY taskset, cluster",
        list(names),
    )
    return [_status_row(row) for row in rows]


def _of_project(project: str | None) -> tuple[str, list[Any]]:
    if project is None:
        return "", []
    clause, params = _project_sql(project)
    return f" AND {clause}", params


async def state_counts(db: Reader, project: str | None = None) -> dict[str, int]:
    """How many placements on registered clusters (of `project`, None: of every project) are
    in each state (removed left out)."""
    scope, params = _of_project(project)
    rows = await db.fetch_all(
        "SELECT s.state AS state, count(*) AS n FROM cluster_status s"
        " JOIN clusters c ON c.name = s.cluster"
        f" WHERE c.registered = 1 AND s.state != 'removed'{scope} GROUP BY s.state",
        params,
    )
    return {str(row["state"]): int(row["n"]) for row in rows}


async def drift_reported(db: Reader, project: str | None = None) -> int:
    """Placements on registered clusters (of `project`, None: of every project) that reported
    drift at least once."""
    scope, params = _of_project(project)
    rows = await db.fetch_all(
        "SELECT count(*) AS n FROM cluster_status s JOIN clusters c ON c.name = s.cluster"
        " WHERE c.registered = 1 AND s.state != 'removed'"
        f" AND (s.state = 'drifted' OR s.drift_count > 0){scope}",
        params,
    )
    return int(rows[0]["n"])


async def last_reports(db: Reader) -> dict[str, str]:
    """Each registered cluster's latest report time, for those that reported."""
    rows = await db.fetch_all(
        "SELECT s.cluster AS cluster, max(s.last_report_at) AS at FROM cluster_status s"
        " JOIN clusters c ON c.name = s.cluster"
        " WHERE c.registered = 1 AND s.last_report_at IS NOT NULL GROUP BY s.cluster"
    )
    return {str(row["cluster"]): str(row["at"]) for row in rows}


async def rollouts(db: Reader, taskset: str | None = None) -> list[RolloutRow]:
    """Rollouts with their progress; `complete` once every target applied the version."""
    sql = "SELECT * FROM rollouts"
    params: list[Any] = []
    if taskset is not None:
        sql += " WHERE taskset = ?"
        params.append(taskset)
    result = []
    for row in await db.fetch_all(sql + " ORDER BY taskset", params):
        counts = await db.fetch_all(
            "SELECT count(*) AS targets,"
            " sum(CASE WHEN s.applied_version = ? AND s.state = 'applied' THEN 1 ELSE 0 END)"
            " AS applied FROM cluster_status s JOIN clusters c ON c.name = s.cluster"
            " WHERE c.registered = 1 AND s.taskset = ? AND s.removed = 0",
            (row["version"], row["taskset"]),
        )
        targets = int(counts[0]["targets"] or 0)
        applied = int(counts[0]["applied"] or 0)
        if row["halted"]:
            state = "halted"
        elif row["wave"] + 1 >= row["total_waves"] and applied >= targets:
            state = "complete"
        else:
            state = "progressing"
        result.append(
            RolloutRow(
                taskset=row["taskset"],
                version=row["version"],
                wave=row["wave"],
                total_waves=row["total_waves"],
                state=state,
                failed=orjson.loads(row["failed"]),
                reason=row["reason"],
                applied=applied,
                targets=targets,
            )
        )
    return result


async def audit_trail(
    db: Reader,
    *,
    cluster: str | None = None,
    taskset: str | None = None,
    correlation_id: str | None = None,
    limit: int = 1000,
) -> list[AuditRow]:
    """The audit index, oldest first, filtered by cluster, taskset or correlation."""
    clauses = []
    params: list[Any] = []
    for column, value in (
        ("cluster", cluster),
        ("taskset", taskset),
        ("correlation_id", correlation_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = await db.fetch_all(
        f"SELECT * FROM (SELECT * FROM audit{where} ORDER BY time DESC, stream, seq DESC,"
        " cluster DESC LIMIT ?) ORDER BY time, stream, seq, cluster",
        [*params, limit],
    )
    return [AuditRow(**row) for row in rows]


async def positions(db: Reader) -> dict[str, int]:
    return {row["stream"]: int(row["seq"]) for row in await db.fetch_all("SELECT * FROM positions")}


class TasksetRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    latest_version: int
    digest: str
    format: str
    placement: dict[str, Any]
    rollout: dict[str, Any]
    retired: bool
    updated_at: str
    provenance: dict[str, Any] | None = None
    """Where the latest version was fetched from (a remote source), if it was."""


class VersionRow(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    digest: str
    source_digest: str
    format: str
    body_size: int
    published_at: str
    actor: str
    event_id: str
    provenance: dict[str, Any] | None = None


async def tasksets(db: Reader, *, include_retired: bool = True) -> list[TasksetRow]:
    """Every published taskset with its latest version, placement and rollout."""
    sql = (
        "SELECT t.*, p.provenance FROM tasksets t LEFT JOIN taskset_provenance p"
        " ON p.taskset = t.name AND p.version = t.latest_version"
    )
    if not include_retired:
        sql += " WHERE t.retired = 0"
    rows = await db.fetch_all(sql + " ORDER BY t.name")
    return [
        TasksetRow(
            name=row["name"],
            latest_version=row["latest_version"],
            digest=row["digest"],
            format=row["format"],
            placement=orjson.loads(row["placement"]),
            rollout=orjson.loads(row["rollout"]),
            retired=bool(row["retired"]),
            updated_at=row["updated_at"],
            provenance=orjson.loads(row["provenance"]) if row["provenance"] else None,
        )
        for row in rows
    ]


async def taskset_versions(db: Reader, taskset: str) -> list[VersionRow]:
    """The published versions of a taskset, newest first."""
    rows = await db.fetch_all(
        "SELECT v.*, p.provenance FROM taskset_versions v LEFT JOIN taskset_provenance p"
        " ON p.taskset = v.taskset AND p.version = v.version"
        " WHERE v.taskset = ? ORDER BY v.version DESC",
        (taskset,),
    )
    return [
        VersionRow(
            **{**row, "provenance": orjson.loads(row["provenance"]) if row["provenance"] else None}
        )
        for row in rows
    ]


async def taskset_log_bytes(db: Reader) -> dict[str, int]:
    """Taskset -> the bytes its published snapshots take on the log (every version's body)."""
    rows = await db.fetch_all(
        "SELECT taskset, SUM(body_size) AS size FROM taskset_versions GROUP BY taskset"
    )
    return {row["taskset"]: int(row["size"] or 0) for row in rows}
