"""Blueprint placement and `dependsOn` gating in the scheduler, driven purely (no I/O)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from events.catalog import (
    BlueprintAssigned,
    BlueprintPublished,
    BlueprintRolloutAdvanced,
    BlueprintRolloutHalted,
    BlueprintSyncForced,
    BlueprintUnassigned,
    ClusterTaskHeld,
    ClusterTaskScheduled,
    RolloutStrategy,
    TasksetDependenciesSet,
)
from events.replay import StoredEvent
from scheduler.dependencies import dependency_hold
from scheduler.history import desired_state_at
from taskset.blueprints import BlueprintEntry
from tests.scheduler_fixtures import (
    T0,
    applied,
    config_map,
    envelope,
    failed,
    make_taskset,
    patch_override,
    published,
    registered,
    relabelled,
)
from tests.unit.test_placement import Harness, live


def blueprint(
    version: int, *entries: BlueprintEntry, selector: str = "env=prod", **fields: Any
) -> BlueprintPublished:
    return BlueprintPublished(
        **envelope(),
        blueprint="prod",
        blueprint_version=version,
        digest=f"sha256:{version}",
        entries=list(entries),
        selector=selector,
        **fields,
    )


def entry(taskset: str, *depends_on: str, version: int = 0) -> BlueprintEntry:
    return BlueprintEntry(taskset=taskset, version=version, depends_on=list(depends_on))


def three_tasksets(h: Harness) -> None:
    for name in ("crds", "ingress", "monitoring"):
        h.append(published(make_taskset(name, config_map(name)), 1))
        h.append(published(make_taskset(name, config_map(name, {"v": "2"})), 2))


def stack(h: Harness) -> None:
    three_tasksets(h)
    h.append(blueprint(1, entry("crds"), entry("ingress", "crds"), entry("monitoring", "crds")))


def holds(h: Harness) -> list[tuple[str, str, str]]:
    return [(e.cluster, e.taskset, e.hold) for e in h.log if isinstance(e, ClusterTaskHeld)]


def test_a_new_cluster_gets_the_dependency_first_and_dependents_only_once_it_is_ready() -> None:
    h = Harness()
    stack(h)
    h.append(registered("c1", env="prod"))
    assert live(h, "crds") == {"c1": 2}
    assert live(h, "ingress") == {}
    assert live(h, "monitoring") == {}
    assert set(holds(h)) == {("c1", "ingress", "Waiting"), ("c1", "monitoring", "Waiting")}
    h.report(applied("c1", "crds", 2, 1))
    assert live(h, "ingress") == {"c1": 2}
    assert live(h, "monitoring") == {"c1": 2}


def test_a_failed_dependency_blocks_its_dependents_with_the_reason_recorded_once() -> None:
    h = Harness()
    stack(h)
    h.append(registered("c1", env="prod"))
    h.report(failed("c1", "crds", 2, 1))
    h.report(failed("c1", "crds", 2, 1))
    blocked = [e for e in h.log if isinstance(e, ClusterTaskHeld) and e.hold == "Blocked"]
    assert [(e.taskset, e.reason) for e in blocked] == [
        ("ingress", "dependency crds v2 failed on c1"),
        ("monitoring", "dependency crds v2 failed on c1"),
    ]
    assert live(h, "ingress") == {}


def test_a_cluster_that_stops_matching_leaves_the_blueprint_and_one_that_starts_joins() -> None:
    h = Harness()
    stack(h)
    h.append(registered("c1", env="prod"), registered("c2", env="dev"))
    h.report(applied("c1", "crds", 2, 1))
    assert live(h, "ingress") == {"c1": 2}
    h.append(relabelled("c1", env="dev"), relabelled("c2", env="prod"))
    assert live(h, "crds") == {"c2": 2}
    assert live(h, "ingress") == {}
    removed = {(e.cluster, e.taskset) for e in h.scheduled() if e.removed}
    assert removed == {("c1", "crds"), ("c1", "ingress"), ("c1", "monitoring")}


def test_entries_pin_versions_and_a_cluster_can_be_pinned_to_a_blueprint_version() -> None:
    h = Harness()
    three_tasksets(h)
    h.append(blueprint(1, entry("crds", version=1)))
    h.append(registered("c1", env="prod"), registered("c2", env="prod"))
    assert live(h, "crds") == {"c1": 1, "c2": 1}
    h.append(BlueprintAssigned(**envelope(), blueprint="prod", cluster="c2", pinned_version=1))
    h.append(blueprint(2, entry("crds", version=2)))
    assert live(h, "crds") == {"c1": 2, "c2": 1}
    h.append(BlueprintUnassigned(**envelope(), blueprint="prod", cluster="c2"))
    assert live(h, "crds") == {"c1": 2, "c2": 2}


def test_an_assigned_cluster_gets_the_blueprint_whatever_its_labels() -> None:
    h = Harness()
    stack(h)
    h.append(registered("lab", env="dev"))
    assert live(h, "crds") == {}
    h.append(BlueprintAssigned(**envelope(), blueprint="prod", cluster="lab"))
    assert live(h, "crds") == {"lab": 2}


def test_removing_the_dependency_from_a_new_version_removes_it_and_keeps_dependents() -> None:
    h = Harness()
    stack(h)
    h.append(registered("c1", env="prod"))
    h.report(applied("c1", "crds", 2, 1))
    h.append(blueprint(2, entry("ingress"), entry("monitoring")))
    assert live(h, "crds") == {}
    assert live(h, "ingress") == {"c1": 2}


def test_force_sync_sends_every_entry_again_in_dependency_order() -> None:
    h = Harness()
    stack(h)
    h.append(registered("c1", env="prod"))
    h.report(applied("c1", "crds", 2, 1))
    before = {t.taskset_name: t.generation for t in h.desired.values()}
    h.append(BlueprintSyncForced(**envelope(), blueprint="prod", cluster="c1"))
    generations = {t.taskset_name: t.generation for t in h.desired.values()}
    assert generations == {**before, "crds": before["crds"] + 1}
    h.report(applied("c1", "crds", 2, 2))
    after = {t.taskset_name: t.generation for t in h.desired.values()}
    assert after == {name: generation + 1 for name, generation in before.items()}
    h.append(registered("c2", env="dev"))
    assert {t.taskset_name: t.generation for t in h.desired.values()} == after


def test_entry_values_re_render_the_chart_and_a_cluster_override_still_wins() -> None:
    h = Harness()
    h.append(published(make_taskset("web", helm=True), 1, values={"replicas": 1}))
    h.append(
        blueprint(1, BlueprintEntry(taskset="web", values={"replicas": 3}), drift_policy="report")
    )
    h.append(registered("c1", env="prod"))
    task = h.task("c1")
    assert task is not None
    assert task.taskset is not None
    assert task.taskset.drift_policy == "report"
    assert task.taskset.install[0].object["spec"]["replicas"] == 3


def test_a_taskset_published_alone_waits_for_its_own_dependencies() -> None:
    h = Harness()
    h.append(registered("c1", env="prod"))
    h.append(published(make_taskset("crds", config_map("crds")), 1, selector="env=prod"))
    h.append(TasksetDependenciesSet(**envelope(), taskset="app", depends_on=["crds"]))
    h.append(published(make_taskset("app", config_map("app")), 1, selector="env=prod"))
    assert live(h, "app") == {}
    h.report(applied("c1", "crds", 1, 1))
    assert live(h, "app") == {"c1": 1}


def test_a_dependency_not_placed_on_the_cluster_blocks_its_dependent() -> None:
    h = Harness()
    h.append(registered("c1", env="prod"))
    h.append(published(make_taskset("crds", config_map("crds")), 1, selector="env=dev"))
    h.append(TasksetDependenciesSet(**envelope(), taskset="app", depends_on=["crds"]))
    h.append(published(make_taskset("app", config_map("app")), 1, selector="env=prod"))
    assert holds(h) == [("c1", "app", "Blocked")]
    assert dependency_hold(h.state, "c1", ["crds"]) is not None
    assert not [e for e in h.log if isinstance(e, ClusterTaskScheduled) and e.taskset == "app"]


def generation_of(h: Harness, cluster: str, taskset: str) -> int:
    task = h.task(cluster, taskset)
    assert task is not None
    return task.generation


def two_clusters_on_v1(h: Harness) -> None:
    three_tasksets(h)
    h.append(blueprint(1, entry("crds", version=1)))
    h.append(registered("c1", env="prod"), registered("c2", env="prod"))
    h.report(applied("c1", "crds", 1, 1), applied("c2", "crds", 1, 1))


def test_a_new_blueprint_version_rolls_out_in_waves_gated_on_the_whole_stack() -> None:
    h = Harness()
    two_clusters_on_v1(h)
    h.append(blueprint(2, entry("crds", version=2), rollout=RolloutStrategy(batch_size=1)))
    assert live(h, "crds") == {"c1": 2, "c2": 1}
    h.report(applied("c1", "crds", 2, generation_of(h, "c1", "crds")))
    assert live(h, "crds") == {"c1": 2, "c2": 2}
    waves = [e.clusters for e in h.log if isinstance(e, BlueprintRolloutAdvanced)]
    assert waves == [["c1", "c2"], ["c1"], ["c2"]]


def test_a_failing_wave_halts_the_blueprint_rollout_and_later_clusters_keep_their_version() -> None:
    h = Harness()
    two_clusters_on_v1(h)
    h.append(blueprint(2, entry("crds", version=2), rollout=RolloutStrategy(batch_size=1)))
    h.report(failed("c1", "crds", 2, generation_of(h, "c1", "crds")))
    halted = [e for e in h.log if isinstance(e, BlueprintRolloutHalted)]
    assert [(e.blueprint_version, e.failed) for e in halted] == [(2, ["c1"])]
    assert live(h, "crds") == {"c1": 2, "c2": 1}
    h.append(blueprint(3, entry("crds", version=1)))
    assert live(h, "crds") == {"c1": 1, "c2": 1}


async def test_state_as_of_a_moment_names_the_blueprint_version_and_who_published_it() -> None:
    h = Harness()
    three_tasksets(h)
    h.append(
        blueprint(
            1,
            BlueprintEntry(taskset="crds", version=1),
            drift_policy="report",
        )
    )
    h.append(registered("c1", env="prod"))
    middle = len(h.log)
    second = blueprint(2, entry("crds", version=2))
    h.append(msgspec.structs.replace(second, actor="user:alice"))

    def log_until(count: int) -> AsyncIterator[StoredEvent]:
        async def replay() -> AsyncIterator[StoredEvent]:
            for seq, event in enumerate(h.log[:count], start=1):
                yield StoredEvent(seq=seq, subject=event.subject, stored_at=T0, event=event)

        return replay()

    before = await desired_state_at(log_until(middle), "c1")
    after = await desired_state_at(log_until(len(h.log)), "c1")
    assert [(b.blueprint, b.version, b.published_by) for b in before.blueprints] == [
        ("prod", 1, "user:test")
    ]
    assert [(b.blueprint, b.version, b.published_by) for b in after.blueprints] == [
        ("prod", 2, "user:alice")
    ]
    (task,) = before.tasks
    assert task.verified, task.problem
    assert task.task.taskset is not None
    assert task.task.taskset.drift_policy == "report"


def test_a_projects_blueprint_brings_another_projects_shared_taskset_to_its_own_clusters_only() -> (
    None
):
    h = Harness()
    h.append(registered("team-a--east", env="prod"), registered("team-b--east", env="prod"))
    h.append(published(make_taskset("team-a--monitoring", config_map("m")), 1))
    h.append(
        msgspec.structs.replace(
            blueprint(1, entry("team-a--monitoring")), blueprint="team-b--platform"
        )
    )
    assert live(h, "team-a--monitoring") == {"team-b--east": 1}, (
        "team-b's blueprint places it on team-b's cluster, never on team-a's by its selector"
    )
    h.append(
        patch_override(
            "team-a--monitoring",
            "everywhere",
            "m",
            {"data": {"v": "9"}},
            selector="env=prod",
            kind="ConfigMap",
        )
    )
    task = h.task("team-b--east", "team-a--monitoring")
    assert task is not None
    assert task.overrides == [], "the owner's overrides do not reach another project's cluster"
