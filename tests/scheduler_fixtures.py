"""Builders of hub events for scheduler and projector tests: tasksets made by hand."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from events.catalog import (
    ClusterDeregistered,
    ClusterLabelsChanged,
    ClusterRegistered,
    ClusterTaskScheduled,
    Event,
    OverrideRemoved,
    OverrideSet,
    Placement,
    RolloutStrategy,
    ScheduledCluster,
    TaskApplied,
    TaskFailed,
    TasksetPublished,
    TasksetRetired,
)
from events.ids import new_event_id
from taskset.capabilities import RenderContext
from taskset.codec import encode_taskset
from taskset.digest import digest_of
from taskset.model import SourceInfo, Step, Taskset

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
_clock = itertools.count()


def at() -> datetime:
    return T0 + timedelta(milliseconds=next(_clock))


def envelope(actor: str = "user:test") -> dict[str, Any]:
    return {"id": new_event_id(), "occurred_at": at(), "actor": actor}


def config_map(name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data or {"key": "value"},
    }


def deployment(name: str = "web", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    }


def make_taskset(name: str = "web", *objects: dict[str, Any], helm: bool = False) -> Taskset:
    return Taskset(
        name=name,
        namespace="apps",
        install=[Step(object=obj) for obj in (objects or (deployment(name),))],
        source=SourceInfo(
            format="helm" if helm else "yaml",
            digest="sha256:" + "0" * 64,
            chart_archive="sha256:chart" if helm else "",
        ),
    )


def published(
    taskset: Taskset,
    version: int,
    *,
    clusters: list[str] | None = None,
    selector: str = "",
    rollout: RolloutStrategy | None = None,
    values: dict[str, Any] | None = None,
) -> TasksetPublished:
    body = encode_taskset(taskset)
    helm = taskset.source is not None and taskset.source.format == "helm"
    return TasksetPublished(
        **envelope(),
        taskset=taskset.name,
        taskset_version=version,
        digest=digest_of(taskset),
        source_digest="sha256:" + "0" * 64,
        format="helm" if helm else "yaml",
        body=body,
        body_size=len(body),
        placement=Placement(clusters=clusters or [], selector=selector),
        rollout=rollout or RolloutStrategy(),
        values=values or {},
        chart_archive="sha256:chart" if helm else "",
    )


def retired(name: str) -> TasksetRetired:
    return TasksetRetired(**envelope(), taskset=name)


def registered(cluster: str, **labels: str) -> ClusterRegistered:
    return ClusterRegistered(**envelope(), cluster=cluster, labels=labels)


def relabelled(cluster: str, **labels: str) -> ClusterLabelsChanged:
    return ClusterLabelsChanged(**envelope(), cluster=cluster, labels=labels)


def deregistered(cluster: str) -> ClusterDeregistered:
    return ClusterDeregistered(**envelope(), cluster=cluster)


def patch_override(
    taskset: str,
    name: str,
    target: str,
    merge: dict[str, Any],
    *,
    cluster: str = "",
    selector: str = "",
    kind: str = "Deployment",
) -> OverrideSet:
    return OverrideSet(
        **envelope(),
        taskset=taskset,
        name=name,
        cluster=cluster,
        selector=selector,
        patches=[{"target": {"kind": kind, "name": target}, "mergePatch": merge}],
    )


def values_override(
    taskset: str, name: str, values: dict[str, Any], *, cluster: str = "", selector: str = ""
) -> OverrideSet:
    return OverrideSet(
        **envelope(), taskset=taskset, name=name, cluster=cluster, selector=selector, values=values
    )


def override_removed(taskset: str, name: str) -> OverrideRemoved:
    return OverrideRemoved(**envelope(), taskset=taskset, name=name)


def applied(
    cluster: str, taskset: str, version: int, generation: int, *, removed: bool = False
) -> TaskApplied:
    return TaskApplied(
        **envelope(f"cluster:{cluster}"),
        cluster=cluster,
        taskset=taskset,
        taskset_version=version,
        generation=generation,
        removed=removed,
    )


def failed(cluster: str, taskset: str, version: int, generation: int) -> TaskFailed:
    return TaskFailed(
        **envelope(f"cluster:{cluster}"),
        cluster=cluster,
        taskset=taskset,
        taskset_version=version,
        generation=generation,
        reason="image pull failed",
    )


class ReplicasRenderer:
    """A stand-in Helm engine: renders one Deployment whose replicas come from the values."""

    def __init__(self) -> None:
        self.calls = 0

    def render(
        self,
        chart_archive_digest: str,
        values: dict[str, Any],
        name: str,
        namespace: str,
        previous: Taskset | None = None,
        context: RenderContext | None = None,
    ) -> Taskset:
        self.calls += 1
        return Taskset(
            name=name,
            namespace=namespace,
            install=[Step(object=deployment(name, int(values.get("replicas", 1))))],
        )


@dataclass(frozen=True)
class ScheduledFact:
    """One cluster's part of a ClusterTaskScheduled, with the taskset it is about."""

    taskset: str
    part: ScheduledCluster

    @property
    def cluster(self) -> str:
        return self.part.cluster

    @property
    def taskset_version(self) -> int:
        return self.part.taskset_version

    @property
    def generation(self) -> int:
        return self.part.generation

    @property
    def digest(self) -> str:
        return self.part.digest

    @property
    def wave(self) -> int:
        return self.part.wave

    @property
    def removed(self) -> bool:
        return self.part.removed

    @property
    def overrides(self) -> list[str]:
        return self.part.overrides


def scheduled_facts(events: Iterable[Event]) -> list[ScheduledFact]:
    """Every cluster's new desired state the events record, in their order."""
    return [
        ScheduledFact(taskset=event.taskset, part=part)
        for event in events
        if isinstance(event, ClusterTaskScheduled)
        for part in event.clusters
    ]
