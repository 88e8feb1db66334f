"""How each event changes the read models.

Each table column is owned by one stream: desired state by EVENTS, observed state by REPORTS.
A row's `state` is recomputed from all of its columns on every write (`status_state`, pure), so
the tables end up the same whatever order the two streams were interleaved in: a rebuild from
sequence 1 hashes equal to the live projection. Deregistered clusters are flagged, not deleted,
for the same reason. Times come from the events and the streams, never from a clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec
import orjson

from events.catalog import (
    BlueprintAssigned,
    BlueprintPublished,
    BlueprintSyncForced,
    BlueprintUnassigned,
    ClusterCapabilitiesReported,
    ClusterDeregistered,
    ClusterDrainStarted,
    ClusterHealthChanged,
    ClusterLabelsChanged,
    ClusterRegistered,
    ClusterTaskHeld,
    ClusterTaskRefused,
    ClusterTaskScheduled,
    DataKeysShredded,
    DriftCorrected,
    DriftDetected,
    Event,
    KeysRotated,
    OverrideRemoved,
    OverrideSet,
    Report,
    RolloutAdvanced,
    RolloutHalted,
    RolloutResumed,
    ScheduledCluster,
    TaskApplied,
    TaskFailed,
    TasksetDependenciesSet,
    TasksetPublished,
    TasksetRetired,
)
from events.edges import report_origin

Row = dict[str, Any]


class Writer(Protocol):
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


def iso(moment: datetime) -> str:
    return moment.isoformat()


def dumps(value: Any) -> str:
    return orjson.dumps(msgspec.to_builtins(value), option=orjson.OPT_SORT_KEYS).decode()


def status_state(row: Row) -> str:
    """The one-word state of a (cluster, taskset) from its desired and observed columns."""
    desired = row.get("desired_generation")
    if row.get("refused_version") is not None:
        return "refused"
    if desired is None:
        return "unscheduled"
    outcome_generation = row.get("last_outcome_generation") or 0
    if row.get("removed"):
        if row.get("applied_removed") and (row.get("applied_generation") or 0) >= desired:
            return "removed"
        return "removing"
    if outcome_generation < desired:
        return "pending"
    if row.get("last_outcome") == "failed":
        return "failed"
    if row.get("drifted"):
        return "drifted"
    return "applied"


async def _update_status(db: Writer, cluster: str, taskset: str, changes: Row) -> None:
    row = await db.fetch_one(
        "SELECT * FROM cluster_status WHERE cluster = ? AND taskset = ?", (cluster, taskset)
    )
    merged: Row = dict(row) if row is not None else {"cluster": cluster, "taskset": taskset}
    if "drift_increment" in changes:
        merged["drift_count"] = (merged.get("drift_count") or 0) + changes.pop("drift_increment")
    if "last_report_at" in changes and merged.get("last_report_at"):
        changes["last_report_at"] = max(changes["last_report_at"], merged["last_report_at"])
    merged.update(changes)
    merged["state"] = status_state(merged)
    merged.setdefault("removed", 0)
    merged.setdefault("applied_removed", 0)
    merged.setdefault("drift_count", 0)
    merged.setdefault("drifted", 0)
    columns = sorted(merged)
    await db.execute(
        f"INSERT OR REPLACE INTO cluster_status ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})",
        [merged[c] for c in columns],
    )


async def project_event(
    db: Writer,
    stream: str,
    seq: int,
    stored_at: datetime,
    event: Event,
    headers: Mapping[str, str] | None = None,
    subject: str = "",
) -> None:
    """Apply one event to the read models (inside the caller's transaction).

    A report sourced from one cluster's outbox that names another cluster is a forgery: it
    stays in the audit trail, marked, and changes no status.
    """
    if isinstance(event, Report):
        origin = report_origin(subject, headers)
        if origin is not None and origin != event.cluster:
            await _audit(
                db,
                stream,
                seq,
                stored_at,
                event,
                note=f"ignored: it came from the outbox of cluster {origin}",
            )
            return
    await _audit(db, stream, seq, stored_at, event)
    project = _PROJECTIONS.get(type(event))
    if project is not None:
        await project(db, event, stored_at)


# --- one handler per event type (events without one change only the audit trail) -----------


async def _project_taskset_published(
    db: Writer, event: TasksetPublished, stored_at: datetime
) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO taskset_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.taskset,
            event.taskset_version,
            event.digest,
            event.source_digest,
            event.format,
            event.body_size,
            iso(event.occurred_at),
            event.actor,
            event.id,
        ),
    )
    if event.provenance is not None:
        await db.execute(
            "INSERT OR REPLACE INTO taskset_provenance VALUES (?, ?, ?)",
            (event.taskset, event.taskset_version, dumps(event.provenance)),
        )
    await db.execute(
        "INSERT INTO tasksets VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (name) DO UPDATE"
        " SET latest_version = excluded.latest_version, digest = excluded.digest,"
        " format = excluded.format, placement = excluded.placement,"
        " rollout = excluded.rollout, retired = 0, updated_at = excluded.updated_at"
        " WHERE excluded.latest_version >= tasksets.latest_version",
        (
            event.taskset,
            event.taskset_version,
            event.digest,
            event.format,
            dumps(event.placement),
            dumps(event.rollout),
            iso(event.occurred_at),
        ),
    )


async def _project_taskset_retired(db: Writer, event: TasksetRetired, stored_at: datetime) -> None:
    await db.execute(
        "UPDATE tasksets SET retired = 1, updated_at = ? WHERE name = ?",
        (iso(event.occurred_at), event.taskset),
    )


async def _project_override_set(db: Writer, event: OverrideSet, stored_at: datetime) -> None:
    body = {"values": event.values} if event.values else {"patches": event.patches}
    await db.execute(
        "INSERT OR REPLACE INTO overrides VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.taskset,
            event.name,
            event.cluster,
            event.selector,
            "values" if event.values else "patch",
            dumps(body),
            iso(event.occurred_at),
            event.actor,
            event.id,
        ),
    )


async def _project_override_removed(
    db: Writer, event: OverrideRemoved, stored_at: datetime
) -> None:
    await db.execute(
        "DELETE FROM overrides WHERE taskset = ? AND name = ?", (event.taskset, event.name)
    )


async def _project_cluster_registered(
    db: Writer, event: ClusterRegistered, stored_at: datetime
) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO clusters VALUES (?, ?, 1, ?, ?)",
        (
            event.cluster,
            dumps(event.labels),
            iso(event.occurred_at),
            iso(event.occurred_at),
        ),
    )


async def _project_cluster_labels_changed(
    db: Writer, event: ClusterLabelsChanged, stored_at: datetime
) -> None:
    await db.execute(
        "UPDATE clusters SET labels = ?, updated_at = ? WHERE name = ?",
        (dumps(event.labels), iso(event.occurred_at), event.cluster),
    )


async def _project_cluster_deregistered(
    db: Writer, event: ClusterDeregistered, stored_at: datetime
) -> None:
    await db.execute(
        "UPDATE clusters SET registered = 0, updated_at = ? WHERE name = ?",
        (iso(event.occurred_at), event.cluster),
    )
    # The scheduler forgets a deregistered cluster's assignments and holds; so does the view.
    await db.execute("DELETE FROM blueprint_assignments WHERE cluster = ?", (event.cluster,))
    await db.execute("DELETE FROM holds WHERE cluster = ?", (event.cluster,))


async def _project_cluster_task_scheduled(
    db: Writer, event: ClusterTaskScheduled, stored_at: datetime
) -> None:
    for part in event.clusters:
        await _update_status(
            db,
            part.cluster,
            event.taskset,
            {
                "desired_version": part.taskset_version,
                "desired_generation": part.generation,
                "desired_digest": part.digest,
                "removed": int(part.removed),
                "wave": part.wave,
                "overrides": dumps(part.overrides),
                "scheduled_at": iso(event.occurred_at),
                "refused_version": None,
                "refused_reason": None,
            },
        )
        await db.execute(
            "DELETE FROM holds WHERE cluster = ? AND taskset = ?", (part.cluster, event.taskset)
        )


async def _project_cluster_task_held(
    db: Writer, event: ClusterTaskHeld, stored_at: datetime
) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO holds VALUES (?, ?, ?, ?, ?)",
        (event.cluster, event.taskset, event.hold, event.reason, iso(event.occurred_at)),
    )


async def _project_blueprint_published(
    db: Writer, event: BlueprintPublished, stored_at: datetime
) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO blueprint_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.blueprint,
            event.blueprint_version,
            event.digest,
            dumps(event.entries),
            event.selector,
            event.drift_policy,
            event.base,
            event.base_version,
            iso(event.occurred_at),
            event.actor,
            event.id,
        ),
    )


async def _project_blueprint_assigned(
    db: Writer, event: BlueprintAssigned, stored_at: datetime
) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO blueprint_assignments VALUES (?, ?, ?, ?, ?)",
        (event.blueprint, event.cluster, event.pinned_version, iso(event.occurred_at), event.actor),
    )


async def _project_blueprint_unassigned(
    db: Writer, event: BlueprintUnassigned, stored_at: datetime
) -> None:
    await db.execute(
        "DELETE FROM blueprint_assignments WHERE blueprint = ? AND cluster = ?",
        (event.blueprint, event.cluster),
    )


async def _project_cluster_task_refused(
    db: Writer, event: ClusterTaskRefused, stored_at: datetime
) -> None:
    await _update_status(
        db,
        event.cluster,
        event.taskset,
        {"refused_version": event.taskset_version, "refused_reason": event.reason},
    )


async def _project_rollout_advanced(
    db: Writer, event: RolloutAdvanced, stored_at: datetime
) -> None:
    await db.execute(
        "INSERT OR REPLACE INTO rollouts VALUES (?, ?, ?, ?, 0, '[]', '', ?)",
        (
            event.taskset,
            event.taskset_version,
            event.wave,
            event.total_waves,
            iso(event.occurred_at),
        ),
    )


async def _project_rollout_halted(db: Writer, event: RolloutHalted, stored_at: datetime) -> None:
    await db.execute(
        "INSERT INTO rollouts VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (taskset) DO"
        " UPDATE SET version = excluded.version, wave = excluded.wave, halted = 1,"
        " failed = excluded.failed, reason = excluded.reason,"
        " updated_at = excluded.updated_at",
        (
            event.taskset,
            event.taskset_version,
            event.wave,
            event.wave + 1,
            dumps(event.failed),
            event.reason,
            iso(event.occurred_at),
        ),
    )


async def _project_rollout_resumed(db: Writer, event: RolloutResumed, stored_at: datetime) -> None:
    await db.execute(
        "UPDATE rollouts SET halted = 0, reason = '', updated_at = ?"
        " WHERE taskset = ? AND version = ?",
        (iso(event.occurred_at), event.taskset, event.taskset_version),
    )


async def _project_task_applied(db: Writer, event: TaskApplied, stored_at: datetime) -> None:
    await _update_status(
        db,
        event.cluster,
        event.taskset,
        {
            "applied_version": event.taskset_version,
            "applied_generation": event.generation,
            "applied_digest": event.digest,
            "applied_removed": int(event.removed),
            "last_outcome": "applied",
            "last_outcome_generation": event.generation,
            "last_report_at": iso(stored_at),
            "drifted": 0,
        },
    )


async def _project_task_failed(db: Writer, event: TaskFailed, stored_at: datetime) -> None:
    await _update_status(
        db,
        event.cluster,
        event.taskset,
        {
            "failed_version": event.taskset_version,
            "failed_generation": event.generation,
            "failed_reason": f"{event.phase} {event.object}: {event.reason}".strip(),
            "last_outcome": "failed",
            "last_outcome_generation": event.generation,
            "last_report_at": iso(stored_at),
        },
    )


async def _project_drift_detected(db: Writer, event: DriftDetected, stored_at: datetime) -> None:
    await _update_status(
        db,
        event.cluster,
        event.taskset,
        {
            "drift_increment": 1,
            "drifted": int(event.policy != "ignore"),
            "last_report_at": iso(stored_at),
        },
    )


async def _project_drift_corrected(db: Writer, event: DriftCorrected, stored_at: datetime) -> None:
    await _update_status(
        db,
        event.cluster,
        event.taskset,
        {"drifted": 0, "last_report_at": iso(stored_at)},
    )


_PROJECTIONS: dict[type[Event], Callable[[Writer, Any, datetime], Awaitable[None]]] = {
    TasksetPublished: _project_taskset_published,
    TasksetRetired: _project_taskset_retired,
    OverrideSet: _project_override_set,
    OverrideRemoved: _project_override_removed,
    ClusterRegistered: _project_cluster_registered,
    ClusterLabelsChanged: _project_cluster_labels_changed,
    ClusterDeregistered: _project_cluster_deregistered,
    ClusterTaskScheduled: _project_cluster_task_scheduled,
    ClusterTaskRefused: _project_cluster_task_refused,
    RolloutAdvanced: _project_rollout_advanced,
    RolloutHalted: _project_rollout_halted,
    RolloutResumed: _project_rollout_resumed,
    TaskApplied: _project_task_applied,
    TaskFailed: _project_task_failed,
    DriftDetected: _project_drift_detected,
    DriftCorrected: _project_drift_corrected,
    ClusterTaskHeld: _project_cluster_task_held,
    BlueprintPublished: _project_blueprint_published,
    BlueprintAssigned: _project_blueprint_assigned,
    BlueprintUnassigned: _project_blueprint_unassigned,
}


async def _audit(
    db: Writer, stream: str, seq: int, stored_at: datetime, event: Event, note: str = ""
) -> None:
    """One audit row per event, and per cluster for an event that names a chunk of them (a
    cluster's row says what happened to it)."""
    taskset = getattr(event, "taskset", "")
    if isinstance(event, ClusterTaskScheduled):
        facts = [(part.cluster, summarize_scheduled(event, part)) for part in event.clusters]
    else:
        cluster = getattr(event, "cluster", "")
        facts = [(cluster if isinstance(cluster, str) else "", summarize(event))]
    for cluster, summary in facts:
        await db.execute(
            "INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream,
                seq,
                iso(stored_at),
                event.type_name,
                cluster,
                taskset if isinstance(taskset, str) else "",
                event.actor,
                event.correlation_id,
                event.causation_id,
                event.id,
                f"{summary} ({note})" if note else summary,
            ),
        )


def summarize_scheduled(event: ClusterTaskScheduled, part: ScheduledCluster) -> str:
    what = "removal" if part.removed else f"v{part.taskset_version}"
    return f"{event.taskset} {what} for {part.cluster} (generation {part.generation})"


def summarize(event: Event) -> str:
    """One line saying what happened, for the audit trail."""
    match event:
        case TasksetPublished():
            return f"{event.taskset} v{event.taskset_version} published ({event.format})"
        case TasksetRetired():
            return f"{event.taskset} retired"
        case OverrideSet():
            scope = f"cluster {event.cluster}" if event.cluster else f"selector {event.selector}"
            kind = "values" if event.values else "patches"
            return f"override {event.name} ({kind}) of {event.taskset} set on {scope}"
        case OverrideRemoved():
            return f"override {event.name} of {event.taskset} removed"
        case ClusterRegistered():
            return f"cluster {event.cluster} registered"
        case ClusterLabelsChanged():
            labels = ",".join(f"{k}={v}" for k, v in sorted(event.labels.items()))
            return f"cluster {event.cluster} labels {labels or '-'}"
        case ClusterDeregistered():
            return f"cluster {event.cluster} deregistered"
        case ClusterCapabilitiesReported():
            caps = event.capabilities
            return (
                f"cluster {event.cluster} reports Kubernetes {caps.kube_version}, "
                f"{len(caps.resources)} API kinds"
            )
        case ClusterDrainStarted():
            return f"cluster {event.cluster} draining: every taskset leaves it"
        case ClusterHealthChanged():
            state = "healthy again" if event.healthy else "unhealthy"
            return f"cluster {event.cluster} {state}: {event.reason}"
        case ClusterTaskScheduled():
            if len(event.clusters) == 1:
                return summarize_scheduled(event, event.clusters[0])
            return f"{event.taskset} scheduled for {len(event.clusters)} clusters"
        case ClusterTaskRefused():
            return f"{event.taskset} v{event.taskset_version} refused for {event.cluster}"
        case RolloutAdvanced():
            return (
                f"{event.taskset} v{event.taskset_version} wave {event.wave + 1}/"
                f"{event.total_waves}: {', '.join(event.clusters)}"
            )
        case RolloutHalted():
            return f"{event.taskset} v{event.taskset_version} halted: {', '.join(event.failed)}"
        case RolloutResumed():
            return f"{event.taskset} v{event.taskset_version} resumed"
        case ClusterTaskHeld():
            return (
                f"{event.taskset} v{event.taskset_version} held on {event.cluster}: "
                f"{event.hold}, {event.reason}"
            )
        case TasksetDependenciesSet():
            return f"{event.taskset} depends on {', '.join(event.depends_on) or 'nothing'}"
        case BlueprintPublished():
            removed = f", removed {', '.join(event.removed)}" if event.removed else ""
            return (
                f"blueprint {event.blueprint} v{event.blueprint_version} published: "
                f"{', '.join(e.taskset for e in event.entries)}{removed}"
            )
        case BlueprintAssigned():
            pin = f" pinned to v{event.pinned_version}" if event.pinned_version else ""
            return f"blueprint {event.blueprint} assigned to {event.cluster}{pin}"
        case BlueprintUnassigned():
            return f"blueprint {event.blueprint} unassigned from {event.cluster}"
        case BlueprintSyncForced():
            return f"blueprint {event.blueprint} sync forced on {event.cluster}"
        case KeysRotated():
            return f"keys rotated (KEK {event.kek}, {len(event.data_keys)} new data key(s))"
        case DataKeysShredded():
            return f"data keys of {event.scope} shredded ({event.reason or 'on request'})"
        case Report():
            return (
                f"{event.type_name} {event.taskset} v{event.taskset_version} "
                f"generation {event.generation} on {event.cluster}"
            )
    return event.type_name
