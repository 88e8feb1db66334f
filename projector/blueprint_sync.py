"""Per-cluster blueprint sync status, read from the projection.

For each cluster in a blueprint (assigned to it, or labelled to match its selector) the status
is one of:

- `in_sync`: every entry of the version the cluster should run is applied, at the version the
  entry asks for and the generation the scheduler last wrote;
- `updating`: some entry is on its way (scheduled, not yet reported, or held `Waiting` for a
  dependency);
- `failed`: some entry failed, was refused, or is held `Blocked`;
- `out_of_date`: the cluster is pinned to an older version than the latest and in sync with it.

`entry` and `reason` name the first entry (in dependency order) that is not in sync, and why.
The status is a pure function of rows (`sync_status`); `blueprint_status` only reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import orjson

from projector.queries import Reader
from taskset.blueprints import BlueprintEntry, dependency_order
from taskset.selectors import InvalidSelector, parse_selector

SyncState = Literal["in_sync", "updating", "failed", "out_of_date"]


class BlueprintVersionRow(msgspec.Struct, frozen=True, kw_only=True):
    blueprint: str
    version: int
    digest: str
    entries: list[BlueprintEntry]
    selector: str
    drift_policy: str
    base: str
    base_version: int
    published_at: str
    actor: str
    event_id: str


class ClusterSync(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    blueprint: str
    version: int
    """The blueprint version the cluster should run (its pin, else the latest)."""
    latest: int
    pinned: bool
    state: SyncState
    entry: str = ""
    reason: str = ""


class EntryStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What the projection knows of one taskset on one cluster."""

    desired_version: int | None = None
    desired_generation: int | None = None
    applied_version: int | None = None
    applied_generation: int | None = None
    removed: bool = False
    state: str = ""
    error: str = ""
    hold: str = ""
    hold_reason: str = ""


def members(
    selector: str, labels_of: Mapping[str, Mapping[str, str]], assigned: Mapping[str, int]
) -> list[str]:
    """The clusters in a blueprint: assigned ones, and those whose labels match."""
    chosen = set(assigned) & set(labels_of)
    if selector:
        try:
            parsed = parse_selector(selector)
        except InvalidSelector:
            parsed = None
        if parsed is not None:
            chosen.update(name for name, labels in labels_of.items() if parsed.matches(labels))
    return sorted(chosen)


def sync_status(
    cluster: str,
    blueprint: str,
    versions: Mapping[int, BlueprintVersionRow],
    pinned: int,
    latest_of: Mapping[str, int],
    statuses: Mapping[str, EntryStatus],
) -> ClusterSync:
    """One cluster's sync status for one blueprint (see the module docstring)."""
    latest = max(versions)
    version = pinned or latest
    entries = versions[version].entries if version in versions else []
    by_name = {entry.taskset: entry for entry in entries}

    def result(state: SyncState, entry: str = "", reason: str = "") -> ClusterSync:
        return ClusterSync(
            cluster=cluster,
            blueprint=blueprint,
            version=version,
            latest=latest,
            pinned=bool(pinned),
            state=state,
            entry=entry,
            reason=reason,
        )

    pending: tuple[str, str] | None = None
    for name in dependency_order(entries):
        wanted = by_name[name].version or latest_of.get(name, 0)
        status = statuses.get(name, EntryStatus())
        if status.hold == "Blocked":
            return result("failed", name, status.hold_reason)
        if status.state in ("failed", "refused") and status.desired_version == wanted:
            return result(
                state="failed",
                entry=name,
                reason=status.error or status.state,
            )
        in_sync = (
            not status.removed
            and status.desired_version == wanted
            and status.applied_version == wanted
            and (status.applied_generation or 0) >= (status.desired_generation or 0)
        )
        if not in_sync and pending is None:
            reason = status.hold_reason or (
                f"v{wanted} not yet scheduled"
                if status.desired_version != wanted
                else f"v{wanted} not yet applied"
            )
            pending = (name, reason)
    if pending is not None:
        return result(state="updating", entry=pending[0], reason=pending[1])
    if version < latest:
        return result(
            state="out_of_date",
            reason=f"pinned to v{version}, latest is v{latest}",
        )
    return result(state="in_sync")


async def blueprint_versions(db: Reader, blueprint: str | None = None) -> list[BlueprintVersionRow]:
    """Published blueprint versions (of one blueprint, or all), by name then version."""
    sql = "SELECT * FROM blueprint_versions"
    params: list[Any] = []
    if blueprint is not None:
        sql += " WHERE blueprint = ?"
        params.append(blueprint)
    rows = await db.fetch_all(sql + " ORDER BY blueprint, version", params)
    return [
        BlueprintVersionRow(
            **{
                **row,
                "entries": msgspec.convert(orjson.loads(row["entries"]), list[BlueprintEntry]),
            }
        )
        for row in rows
    ]


async def blueprint_status(db: Reader, blueprint: str) -> list[ClusterSync]:
    """Every cluster in the blueprint with its sync status, by cluster name."""
    versions = {row.version: row for row in await blueprint_versions(db, blueprint)}
    if not versions:
        return []
    assigned = {
        row["cluster"]: row["pinned_version"]
        for row in await db.fetch_all(
            "SELECT cluster, pinned_version FROM blueprint_assignments WHERE blueprint = ?",
            (blueprint,),
        )
    }
    labels_of = {
        row["name"]: orjson.loads(row["labels"])
        for row in await db.fetch_all("SELECT name, labels FROM clusters WHERE registered = 1")
    }
    latest_of = {
        row["name"]: row["latest_version"]
        for row in await db.fetch_all("SELECT name, latest_version FROM tasksets")
    }
    tasksets = sorted({e.taskset for row in versions.values() for e in row.entries})
    marks = ",".join("?" * len(tasksets))
    statuses: dict[str, dict[str, EntryStatus]] = {}
    for row in await db.fetch_all(
        "SELECT s.*, h.hold AS hold, h.reason AS hold_reason FROM cluster_status s"
        " LEFT JOIN holds h ON h.cluster = s.cluster AND h.taskset = s.taskset"
        f" WHERE s.taskset IN ({marks})",
        tasksets,
    ):
        statuses.setdefault(row["cluster"], {})[row["taskset"]] = _entry_status(row)
    for row in await db.fetch_all(f"SELECT * FROM holds WHERE taskset IN ({marks})", tasksets):
        of_cluster = statuses.setdefault(row["cluster"], {})
        if row["taskset"] not in of_cluster:
            of_cluster[row["taskset"]] = EntryStatus(hold=row["hold"], hold_reason=row["reason"])
    latest = versions[max(versions)]
    return [
        sync_status(
            cluster,
            blueprint,
            versions,
            assigned.get(cluster, 0),
            latest_of,
            statuses.get(cluster, {}),
        )
        for cluster in members(latest.selector, labels_of, assigned)
    ]


def _entry_status(row: Mapping[str, Any]) -> EntryStatus:
    error = row["refused_reason"] if row["state"] == "refused" else row["failed_reason"]
    return EntryStatus(
        desired_version=row["desired_version"],
        desired_generation=row["desired_generation"],
        applied_version=row["applied_version"],
        applied_generation=row["applied_generation"],
        removed=bool(row["removed"]),
        state=row["state"],
        error=error or "",
        hold=row["hold"] or "",
        hold_reason=row["hold_reason"] or "",
    )


def behind(statuses: Sequence[ClusterSync], version: int) -> list[ClusterSync]:
    """Clusters not on blueprint version `version` (or on it but not in sync)."""
    return [s for s in statuses if s.version != version or s.state != "in_sync"]
