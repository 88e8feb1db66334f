"""Registry, override and resume decisions, without a log: pure functions of state and command."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from events.catalog import ClusterLabelsChanged, ClusterRegistered, OverrideSet, RolloutResumed
from projector.projection import status_state
from registry.clusters import (
    ClusterRecord,
    decide_deregister,
    decide_labels,
    decide_register,
    evolve_cluster,
    parse_label_arguments,
)
from registry.errors import (
    ClusterAlreadyRegistered,
    ClusterNotFound,
    InvalidCommand,
    OverrideRefused,
    RolloutNotHalted,
)
from registry.overrides import (
    LatestSnapshot,
    SetOverride,
    decide_set_override,
)
from registry.rollouts import (
    RolloutHistory,
    decide_resume,
)
from taskset.errors import InvalidName
from taskset.overrides import Snapshot
from tests.scheduler_fixtures import deployment, make_taskset

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_label_arguments_set_with_equals_and_remove_with_a_trailing_dash() -> None:
    assert parse_label_arguments(["env=prod", "tier-", "empty="]) == (
        {"env": "prod", "empty": ""},
        ["tier"],
    )
    with pytest.raises(InvalidCommand, match="KEY=VALUE or KEY-"):
        parse_label_arguments(["oops"])


def test_registering_twice_or_with_a_bad_name_is_refused() -> None:
    (event,) = decide_register(ClusterRecord(name="edge-1"), {"env": "prod"}, actor="a", now=NOW)
    assert isinstance(event, ClusterRegistered)
    record = evolve_cluster(ClusterRecord(name="edge-1"), event)
    assert record.registered
    with pytest.raises(ClusterAlreadyRegistered):
        decide_register(record, {}, actor="a", now=NOW)
    with pytest.raises(InvalidName):
        decide_register(ClusterRecord(name="Edge_1"), {}, actor="a", now=NOW)


def test_relabelling_to_the_same_labels_decides_nothing() -> None:
    record = ClusterRecord(name="edge-1", labels={"env": "prod"}, registered=True)
    assert decide_labels(record, {"env": "prod"}, [], actor="a", now=NOW) == []
    (event,) = decide_labels(record, {"tier": "web"}, ["env"], actor="a", now=NOW)
    assert isinstance(event, ClusterLabelsChanged)
    assert event.labels == {"tier": "web"}
    with pytest.raises(ClusterNotFound):
        decide_labels(ClusterRecord(name="x"), {"a": "b"}, [], actor="a", now=NOW)
    with pytest.raises(ClusterNotFound):
        decide_deregister(ClusterRecord(name="x"), actor="a", now=NOW)


def latest(helm: bool = False) -> LatestSnapshot:
    taskset = make_taskset("web", deployment("web"), helm=helm)
    return LatestSnapshot(
        name="web",
        version=3,
        format="helm" if helm else "yaml",
        snapshot=Snapshot(taskset=taskset, chart_archive="sha256:chart" if helm else ""),
        retired=False,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cluster": "edge-1", "selector": "env"}, "exactly one of a cluster or a selector"),
        ({}, "exactly one of a cluster or a selector"),
        ({"cluster": "edge-1"}, "exactly one of Helm values or patches"),
        ({"cluster": "edge-1", "values": {"a": 1}}, "not a Helm chart"),
        ({"selector": "env in", "values": {"a": 1}}, "position"),
        (
            {
                "cluster": "edge-1",
                "patches": [{"target": {"kind": "Service", "name": "web"}, "mergePatch": {}}],
            },
            "Service/web, which taskset web v3 does not have",
        ),
    ],
)
def test_an_override_that_cannot_apply_is_refused_saying_why(
    fields: dict[str, object], message: str
) -> None:
    command = SetOverride(taskset="web", name="o", actor="a", **fields)  # type: ignore[arg-type]
    with pytest.raises((OverrideRefused, InvalidCommand), match=message):
        decide_set_override(latest(), ["edge-1"], command, NOW)


def test_a_values_override_of_a_helm_taskset_is_accepted() -> None:
    command = SetOverride(taskset="web", name="o", cluster="edge-1", values={"a": 1}, actor="a")
    (event,) = decide_set_override(latest(helm=True), ["edge-1"], command, NOW)
    assert isinstance(event, OverrideSet)
    assert event.values == {"a": 1}
    assert event.correlation_id == event.id


def test_only_a_halted_latest_rollout_resumes() -> None:
    halted = RolloutHistory(taskset="web", latest_version=2, version=2, halted=True)
    (event,) = decide_resume(halted, actor="a", now=NOW)
    assert isinstance(event, RolloutResumed)
    assert event.taskset_version == 2
    superseded = RolloutHistory(taskset="web", latest_version=3, version=2, halted=True)
    with pytest.raises(RolloutNotHalted):
        decide_resume(superseded, actor="a", now=NOW)


@pytest.mark.parametrize(
    ("row", "state"),
    [
        ({}, "unscheduled"),
        ({"desired_generation": 2}, "pending"),
        (
            {"desired_generation": 2, "last_outcome": "applied", "last_outcome_generation": 1},
            "pending",
        ),
        (
            {"desired_generation": 2, "last_outcome": "applied", "last_outcome_generation": 2},
            "applied",
        ),
        (
            {"desired_generation": 2, "last_outcome": "failed", "last_outcome_generation": 2},
            "failed",
        ),
        (
            {
                "desired_generation": 2,
                "last_outcome": "applied",
                "last_outcome_generation": 2,
                "drifted": 1,
            },
            "drifted",
        ),
        ({"desired_generation": 3, "removed": 1}, "removing"),
        (
            {"desired_generation": 3, "removed": 1, "applied_removed": 1, "applied_generation": 3},
            "removed",
        ),
        ({"desired_generation": 2, "refused_version": 4}, "refused"),
    ],
)
def test_the_status_state_follows_from_the_row(row: dict[str, object], state: str) -> None:
    assert status_state(row) == state
