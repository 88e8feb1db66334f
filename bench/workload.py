"""What the benchmarks deliver: the example YAML bundle as a taskset, a registered fleet, overrides.

The taskset is `examples/yaml/status-board` run through the real normalizer and the real
publish decision (`registry.tasksets.decide_publish`), so its size and shape are those of a small
real application (a Namespace, CRDs, a ConfigMap, a Deployment, a Service, Jobs).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec

from events.catalog import (
    ClusterRegistered,
    Event,
    OverrideSet,
    Placement,
    RolloutStrategy,
    TasksetPublished,
)
from events.ids import new_event_id
from normalizer import NormalizedSource, NormalizeOptions, normalize
from registry.tasksets import PublishTaskset, TasksetHistory, decide_publish

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "yaml" / "status-board"
TASKSET = "status-board"
BENCH_LABEL = "fleetbus.io/bench"


def example_source(name: str = TASKSET) -> NormalizedSource:
    return normalize(EXAMPLE, NormalizeOptions(name=name, namespace="status-board"))


def cluster_name(index: int) -> str:
    return f"edge-{index:05d}"


def registrations(count: int, now: datetime, *, actor: str = "bench") -> list[Event]:
    """`count` clusters in two environments and ten regions, all labelled for the benchmark."""
    return [
        ClusterRegistered(
            id=new_event_id(),
            occurred_at=now,
            actor=actor,
            cluster=cluster_name(i),
            labels={
                BENCH_LABEL: "true",
                "env": "prod" if i % 2 else "dev",
                "region": f"r{i % 10}",
            },
        )
        for i in range(count)
    ]


def published(
    source: NormalizedSource,
    version: int,
    now: datetime,
    *,
    placement: Placement | None = None,
    digest: str = "",
) -> TasksetPublished:
    """Version `version` of the taskset, decided exactly as `fleetbus publish` decides it."""
    history = TasksetHistory(name=source.taskset.name, version=version - 1, digest=digest)
    event_id = new_event_id()
    decided = decide_publish(
        history,
        PublishTaskset(
            taskset=source.taskset,
            values=source.values,
            placement=placement or Placement(selector=f"{BENCH_LABEL}=true"),
            rollout=RolloutStrategy(),
            actor="user:bench",
            event_id=event_id,
        ),
        now,
    )
    event = decided[0]
    assert isinstance(event, TasksetPublished)
    return event


def replica_overrides(taskset: str, clusters: list[str], now: datetime) -> list[Event]:
    """One per-cluster patch override each: the Deployment's replicas and an annotation."""
    return [
        OverrideSet(
            id=new_event_id(),
            occurred_at=now,
            actor="user:bench",
            taskset=taskset,
            name=f"size-{cluster}",
            cluster=cluster,
            patches=[
                {
                    "target": {"kind": "Deployment", "name": "board"},
                    "mergePatch": {
                        "metadata": {"annotations": {"fleetbus.io/size": cluster}},
                        "spec": {"replicas": 2 + i % 5},
                    },
                }
            ],
        )
        for i, cluster in enumerate(clusters)
    ]


def variant(source: NormalizedSource, number: int) -> NormalizedSource:
    """The same application with its page saying `number`: new content, so a new version."""
    steps = []
    for step in source.taskset.install:
        if step.ref.kind == "ConfigMap":
            manifest = dict(step.object)
            manifest["data"] = {**manifest.get("data", {}), "revision": str(number)}
            step = msgspec.structs.replace(step, object=manifest)
        steps.append(step)
    taskset = msgspec.structs.replace(source.taskset, install=steps)
    return NormalizedSource(taskset=taskset, values=source.values)
