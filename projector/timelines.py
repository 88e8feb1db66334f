"""Time series for the dashboard's charts, read from the audit index.

- `event_rate`: events and reports stored per time bucket (the fleet's pulse);
- `convergence`: for a taskset's latest version, how many clusters run it applied or failed
  over time since it was published, with the moments each rollout wave started;
- `drift_timeline`: a cluster's drift detected and corrected, in time.

The SQL only selects audit rows; the folds that turn them into series are pure functions
(`fold_convergence`, `fill_rate`) so they are tested without a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from events.streams import REPORTS_STREAM as REPORTS
from projector.queries import Reader
from taskset.projects import DEFAULT_PROJECT, SEPARATOR

REPORT_OUTCOMES = ("TaskApplied", "TaskFailed")
ROLLOUT_TYPES = ("RolloutAdvanced", "RolloutHalted")
DRIFT_TYPES = ("DriftDetected", "DriftCorrected")
MAX_CONVERGENCE_ROWS = 50_000
MAX_DRIFT_POINTS = 2_000
_WAVE = re.compile(r" wave (\d+)/(\d+)")


class RateBucket(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    events: int
    reports: int


class EventRate(msgspec.Struct, frozen=True, kw_only=True):
    since: datetime
    until: datetime
    bucket_seconds: int
    buckets: list[RateBucket]


class ConvergencePoint(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    applied: int
    """Clusters whose latest report since the publish is TaskApplied."""
    failed: int


class WaveMark(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    wave: int
    """1-based, as people count waves."""
    total_waves: int
    halted: bool = False


class Convergence(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    since: datetime
    points: list[ConvergencePoint]
    waves: list[WaveMark]


class DriftPoint(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    type: str
    taskset: str
    summary: str


class DriftTimeline(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    points: list[DriftPoint]


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fill_rate(
    counts: Iterable[tuple[int, str, int]], since: datetime, until: datetime, bucket_seconds: int
) -> list[RateBucket]:
    """Every bucket from `since` to `until` (empty ones too) from (epoch bucket, stream, n)."""
    first = int(since.timestamp()) // bucket_seconds
    last = int(until.timestamp()) // bucket_seconds
    table: dict[int, dict[str, int]] = {}
    for bucket, stream, count in counts:
        table.setdefault(bucket, {})[stream] = count
    return [
        RateBucket(
            at=datetime.fromtimestamp(bucket * bucket_seconds, UTC),
            events=sum(n for s, n in table.get(bucket, {}).items() if s != REPORTS),
            reports=table.get(bucket, {}).get(REPORTS, 0),
        )
        for bucket in range(first, last + 1)
    ]


def _in_project(column: str, project: str) -> tuple[str, list[Any]]:
    """SQL: `column` is empty or the full name of an object of `project` (`taskset.projects`)."""
    if project == DEFAULT_PROJECT:
        return f"({column} = '' OR instr({column}, ?) = 0)", [SEPARATOR]
    return f"({column} = '' OR substr({column}, 1, ?) = ?)", [
        len(project) + len(SEPARATOR),
        project + SEPARATOR,
    ]


async def event_rate(
    db: Reader,
    *,
    now: datetime,
    window: timedelta,
    bucket_seconds: int,
    project: str | None = None,
) -> EventRate:
    """Events and reports per bucket; with `project`, only those about its clusters and
    tasksets (an event naming neither is hub-wide and left out)."""
    since = now - window
    where = "time >= ?"
    params: list[Any] = [bucket_seconds, since.isoformat()]
    if project is not None:
        cluster_sql, cluster_params = _in_project("cluster", project)
        taskset_sql, taskset_params = _in_project("taskset", project)
        where += f" AND {cluster_sql} AND {taskset_sql} AND (cluster != '' OR taskset != '')"
        params += cluster_params + taskset_params
    rows = await db.fetch_all(
        "SELECT CAST(unixepoch(time) / ? AS INTEGER) AS bucket, stream, count(*) AS n"
        f" FROM audit WHERE {where} GROUP BY bucket, stream",
        params,
    )
    counts = [(int(r["bucket"]), str(r["stream"]), int(r["n"])) for r in rows]
    return EventRate(
        since=since,
        until=now,
        bucket_seconds=bucket_seconds,
        buckets=fill_rate(counts, since, now, bucket_seconds),
    )


def fold_convergence(
    taskset: str, since: datetime, rows: Iterable[tuple[datetime, str, str, str]]
) -> Convergence:
    """(time, type, cluster, summary) rows, oldest first -> the applied/failed series."""
    latest: dict[str, str] = {}
    points: list[ConvergencePoint] = []
    waves: list[WaveMark] = []
    for at, kind, cluster, summary in rows:
        if kind in REPORT_OUTCOMES:
            latest[cluster] = kind
            applied = sum(1 for k in latest.values() if k == "TaskApplied")
            point = ConvergencePoint(at=at, applied=applied, failed=len(latest) - applied)
            if points and points[-1].at == at:
                points[-1] = point
            else:
                points.append(point)
        elif kind in ROLLOUT_TYPES:
            match = _WAVE.search(summary)
            previous = waves[-1] if waves else None
            if match:
                wave, total = int(match.group(1)), int(match.group(2))
            elif previous is not None:
                wave, total = previous.wave, previous.total_waves
            else:
                wave, total = 1, 1
            waves.append(
                WaveMark(at=at, wave=wave, total_waves=total, halted=kind == "RolloutHalted")
            )
    return Convergence(taskset=taskset, since=since, points=points, waves=waves)


async def convergence(db: Reader, taskset: str, since: datetime) -> Convergence:
    kinds = (*REPORT_OUTCOMES, *ROLLOUT_TYPES)
    rows = await db.fetch_all(
        "SELECT time, type, cluster, summary FROM audit"
        f" WHERE taskset = ? AND time >= ? AND type IN ({', '.join('?' * len(kinds))})"
        " ORDER BY time, stream, seq LIMIT ?",
        [taskset, since.isoformat(), *kinds, MAX_CONVERGENCE_ROWS],
    )
    return fold_convergence(
        taskset,
        since,
        (
            (parse_time(str(r["time"])), str(r["type"]), str(r["cluster"]), str(r["summary"]))
            for r in rows
        ),
    )


async def drift_timeline(db: Reader, cluster: str) -> DriftTimeline:
    rows = await db.fetch_all(
        "SELECT * FROM (SELECT time, type, taskset, summary, stream, seq FROM audit"
        " WHERE cluster = ? AND type IN (?, ?) ORDER BY time DESC, stream, seq DESC LIMIT ?)"
        " ORDER BY time, stream, seq",
        [cluster, *DRIFT_TYPES, MAX_DRIFT_POINTS],
    )
    return DriftTimeline(
        cluster=cluster,
        points=[
            DriftPoint(
                at=parse_time(str(r["time"])),
                type=str(r["type"]),
                taskset=str(r["taskset"]),
                summary=str(r["summary"]),
            )
            for r in rows
        ],
    )
