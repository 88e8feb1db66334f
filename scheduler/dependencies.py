"""Blueprint placement and `dependsOn` gating: which blueprint brings a taskset to a cluster,
and whether the cluster may have its new desired state yet.

Both are pure functions of the folded `SchedulerState`.

Placement. A cluster is in a blueprint when it is assigned to it or its labels match the
blueprint's selector; it runs the version it is pinned to, else the newest version whose
rollout has reached it (`scheduler.blueprint_rollout` starts the waves). When two
blueprints carry the same taskset for one cluster, the first by name decides its version and
values (the other's entry is not applied twice). A taskset a blueprint brings to a cluster
ignores its own placement and rollout there: the blueprint decides.

Gating. A taskset's new desired state on a cluster is held until every taskset it depends on
(its blueprint entry's `dependsOn`, or its own dependencies when published alone) is applied
and Ready there: scheduled at the current generation and reported `TaskApplied` for it (the
edge reports that only once every object is Ready, kstatus rules). A dependency on its way
makes the hold `Waiting`; one that failed, was refused, is retired or is not placed on the
cluster at all makes it `Blocked`, which needs someone to act. What the cluster already runs
stays; only the change waits.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from scheduler.placement import place_taskset
from scheduler.state import BlueprintRecord, SchedulerState
from taskset.blueprints import BlueprintDriftPolicy, BlueprintEntry
from taskset.projects import project_of
from taskset.selectors import InvalidSelector, Selector, parse_selector


@dataclass(frozen=True)
class BlueprintPlacement:
    """Why and how a blueprint brings one taskset to one cluster."""

    blueprint: str
    blueprint_version: int
    entry: BlueprintEntry
    drift_policy: BlueprintDriftPolicy


@dataclass(frozen=True)
class Hold:
    hold: Literal["Waiting", "Blocked"]
    reason: str
    dependencies: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _selector(text: str) -> Selector | None:
    """The parsed selector (cached: it is asked for once per cluster and taskset)."""
    if not text:
        return None
    try:
        return parse_selector(text)
    except InvalidSelector:
        return None  # refused at publish; an old event with a bad one selects nothing


def is_member(
    record: BlueprintRecord,
    name: str,
    cluster: str,
    labels: Mapping[str, str],
    state: SchedulerState,
) -> bool:
    """Whether the cluster is in the blueprint: assigned to it, or matching its selector.

    Only clusters of the blueprint's own project can be (`taskset.projects`)."""
    if project_of(cluster) != project_of(name):
        return False
    if (name, cluster) in state.blueprint_assignments:
        return True
    latest = record.versions.get(record.latest)
    selector = _selector(latest.selector) if latest is not None else None
    return selector is not None and selector.matches(labels)


def blueprint_version_for(
    record: BlueprintRecord,
    name: str,
    cluster: str,
    labels: Mapping[str, str],
    state: SchedulerState,
) -> int:
    """The version of blueprint `name` the cluster runs, or 0 when it is not in it (yet)."""
    if not is_member(record, name, cluster, labels, state):
        return 0
    pinned = state.blueprint_assignments.get((name, cluster), 0)
    if pinned:
        return pinned
    started = state.blueprint_started.get(name)
    if started is not None and started[0] == record.latest and cluster in started[1]:
        return record.latest
    return state.blueprint_reached.get((name, cluster), 0)


def blueprints_of_cluster(state: SchedulerState, cluster: str) -> dict[str, int]:
    """Blueprint -> version, for every blueprint the cluster is in."""
    labels = state.clusters.get(cluster)
    if labels is None:
        return {}
    found: dict[str, int] = {}
    for name in sorted(state.blueprints):
        version = blueprint_version_for(state.blueprints[name], name, cluster, labels, state)
        if version:
            found[name] = version
    return found


def blueprint_placement(
    state: SchedulerState, taskset: str, cluster: str
) -> BlueprintPlacement | None:
    """The blueprint that brings `taskset` to `cluster` (the first by name), if any."""
    labels = state.clusters.get(cluster)
    if labels is None:
        return None
    for name in sorted(state.blueprints):
        record = state.blueprints[name]
        if taskset not in record.tasksets:
            continue
        version = blueprint_version_for(record, name, cluster, labels, state)
        published = record.versions.get(version)
        if published is None:
            continue
        for entry in published.entries:
            if entry.taskset == taskset:
                return BlueprintPlacement(
                    blueprint=name,
                    blueprint_version=version,
                    entry=entry,
                    drift_policy=published.drift_policy,
                )
    return None


def blueprint_targets(state: SchedulerState, taskset: str) -> dict[str, BlueprintPlacement]:
    """Cluster -> the blueprint that brings `taskset` there (first blueprint by name wins)."""
    if not any(taskset in record.tasksets for record in state.blueprints.values()):
        return {}
    targets: dict[str, BlueprintPlacement] = {}
    for cluster in state.clusters:
        placement = blueprint_placement(state, taskset, cluster)
        if placement is not None:
            targets[cluster] = placement
    return targets


def is_placed(state: SchedulerState, taskset: str, cluster: str) -> bool:
    """Whether `taskset` goes to `cluster` at all (by its own placement or a blueprint)."""
    record = state.tasksets.get(taskset)
    if record is None or record.retired or record.current is None:
        return False
    if blueprint_placement(state, taskset, cluster) is not None:
        return True
    return cluster in place_taskset(
        record.current.placement, {cluster: state.clusters[cluster]}, taskset=taskset
    )


def dependencies_of(
    state: SchedulerState, taskset: str, blueprint: BlueprintPlacement | None
) -> list[str]:
    if blueprint is not None:
        return list(blueprint.entry.depends_on)
    return list(state.taskset_dependencies.get(taskset, ()))


def dependency_hold(state: SchedulerState, cluster: str, dependencies: list[str]) -> Hold | None:
    """Why the cluster cannot have a dependent's new desired state yet, or None if it can."""
    blocked: list[tuple[str, str]] = []
    waiting: list[tuple[str, str]] = []
    for dependency in sorted(dependencies):
        record = state.tasksets.get(dependency)
        scheduled = state.scheduled.get(dependency, {}).get(cluster)
        if record is None or record.retired:
            blocked.append((dependency, f"{dependency} is not published"))
            continue
        placed = scheduled is not None and not scheduled.removed
        if not placed and cluster in state.clusters and not is_placed(state, dependency, cluster):
            blocked.append((dependency, f"{dependency} is not placed on {cluster}"))
            continue
        if scheduled is None or scheduled.removed:
            refusal = state.refused.get((cluster, dependency))
            if refusal is not None:
                blocked.append((dependency, f"{dependency} was refused on {cluster}"))
            else:
                waiting.append((dependency, f"{dependency} is not yet scheduled on {cluster}"))
            continue
        report = state.reports.get((cluster, dependency))
        if (
            report is None
            or report.version != scheduled.version
            or report.generation < scheduled.generation
        ):
            waiting.append(
                (dependency, f"{dependency} v{scheduled.version} is not yet Ready on {cluster}")
            )
        elif report.failed:
            blocked.append((dependency, f"{dependency} v{scheduled.version} failed on {cluster}"))
    if blocked:
        return Hold(
            hold="Blocked",
            reason="dependency " + "; ".join(reason for _, reason in blocked),
            dependencies=tuple(name for name, _ in blocked + waiting),
        )
    if waiting:
        return Hold(
            hold="Waiting",
            reason="waiting: " + "; ".join(reason for _, reason in waiting),
            dependencies=tuple(name for name, _ in waiting),
        )
    return None
