"""Blueprints as data and their write side: parsing, bases, dependsOn checks, pure decisions."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from events.catalog import (
    BlueprintAssigned,
    BlueprintPublished,
    RolloutStrategy,
    TasksetDependenciesSet,
)
from registry.blueprints import (
    BlueprintHistory,
    decide_assign_blueprint,
    decide_publish_blueprint,
    decide_taskset_dependencies,
    diff_blueprints,
    evolve_blueprint,
)
from registry.errors import BlueprintRefused, ClusterNotFound, StateConflict, TasksetNotPublished
from registry.tasksets import TasksetHistory
from taskset.blueprints import (
    BlueprintEntry,
    BlueprintError,
    BlueprintSpec,
    DependencyCycle,
    ResolvedBlueprint,
    dependency_order,
    find_cycle,
    parse_blueprint,
    resolve_blueprint,
)

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def entry(taskset: str, *depends_on: str, version: int = 0) -> BlueprintEntry:
    return BlueprintEntry(taskset=taskset, version=version, depends_on=list(depends_on))


def published(*names: str, version: int = 3) -> dict[str, TasksetHistory]:
    return {name: TasksetHistory(name=name, version=version, digest="d") for name in names}


def publish(
    history: BlueprintHistory,
    spec: BlueprintSpec,
    tasksets: dict[str, TasksetHistory],
    base: BlueprintHistory | None = None,
) -> list[Any]:
    return decide_publish_blueprint(
        history, base, spec, tasksets, RolloutStrategy(), actor="user:admin", now=NOW
    )


def folded(name: str, *specs: BlueprintSpec) -> BlueprintHistory:
    history = BlueprintHistory(name=name)
    for spec in specs:
        for event in publish(history, spec, published("a", "b", "c", "d")):
            history = evolve_blueprint(history, event)
    return history


def test_a_blueprint_file_parses_with_camel_case_fields() -> None:
    spec = parse_blueprint(
        {
            "name": "prod",
            "selector": "env=prod",
            "driftPolicy": "report",
            "entries": [
                {"taskset": "a", "version": 2},
                {"taskset": "b", "dependsOn": ["a"], "values": {"replicas": 2}},
            ],
        }
    )
    assert spec.entries == [
        BlueprintEntry(taskset="a", version=2),
        BlueprintEntry(taskset="b", depends_on=["a"], values={"replicas": 2}),
    ]
    assert (spec.selector, spec.drift_policy) == ("env=prod", "report")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"entries": []}, "blueprint: field name is required"),
        ({"name": "x", "entrys": []}, "unknown field entrys"),
        ({"name": "x", "entries": [{"version": 1}]}, "entries[0]: field taskset is required"),
        ({"name": "x", "entries": [{"taskset": "a", "version": -1}]}, "entries[0]: version"),
        ({"name": "x", "entries": [{"taskset": "a", "version": 2**40}]}, "entries[0]: version"),
        ({"name": "x", "baseVersion": "2"}, "baseVersion must be"),
        ({"name": "x", "entries": [{"taskset": "a", "dependsOn": "b"}]}, "dependsOn must be"),
        ({"name": "x", "driftPolicy": "fix"}, "driftPolicy 'fix' is not one of"),
        (["x"], "a blueprint is a mapping"),
    ],
)
def test_a_malformed_blueprint_file_is_refused_naming_the_field(
    document: Any, message: str
) -> None:
    with pytest.raises(BlueprintError, match=re.escape(message)):
        parse_blueprint(document, "blueprint")


def test_a_cycle_is_refused_with_its_members_in_order() -> None:
    spec = BlueprintSpec(name="x", entries=[entry("a", "c"), entry("b", "a"), entry("c", "b")])
    with pytest.raises(DependencyCycle, match=r"dependsOn cycle: a -> c -> b -> a"):
        resolve_blueprint(spec, None)


def test_an_entry_depending_on_itself_is_a_cycle_of_one() -> None:
    with pytest.raises(DependencyCycle, match="a -> a"):
        resolve_blueprint(BlueprintSpec(name="x", entries=[entry("a", "a")]), None)


def test_a_dependency_outside_the_blueprint_is_refused_naming_both_entries() -> None:
    spec = BlueprintSpec(name="x", entries=[entry("b", "a")])
    with pytest.raises(BlueprintError, match="entry b dependsOn a, which is not an entry"):
        resolve_blueprint(spec, None)


def test_find_cycle_returns_nothing_for_a_diamond() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) == []


def test_dependency_order_puts_each_entry_after_what_it_needs() -> None:
    entries = [entry("z-app", "cert"), entry("cert"), entry("b-app", "cert", "z-app")]
    assert dependency_order(entries) == ["cert", "z-app", "b-app"]


def test_extending_a_base_adds_replaces_and_removes_entries_and_inherits_the_selector() -> None:
    base = ResolvedBlueprint(
        entries=[entry("a"), entry("b", "a"), entry("c")], selector="env=prod", drift_policy=""
    )
    spec = BlueprintSpec(
        name="edge", base="core", entries=[entry("b", version=2), entry("d", "a")], remove=["c"]
    )
    resolved = resolve_blueprint(spec, base)
    assert resolved.entries == [entry("a"), entry("b", version=2), entry("d", "a")]
    assert resolved.selector == "env=prod"


def test_removing_an_entry_others_still_depend_on_is_refused() -> None:
    base = ResolvedBlueprint(entries=[entry("a"), entry("b", "a")], selector="", drift_policy="")
    with pytest.raises(BlueprintError, match="entry b dependsOn a"):
        resolve_blueprint(BlueprintSpec(name="x", base="core", remove=["a"]), base)


def test_removing_an_entry_the_base_lacks_is_refused() -> None:
    base = ResolvedBlueprint(entries=[entry("a")], selector="", drift_policy="")
    with pytest.raises(BlueprintError, match="remove names zz, which base core does not have"):
        resolve_blueprint(BlueprintSpec(name="x", base="core", remove=["zz"]), base)


def test_publishing_gives_version_one_then_two_and_records_removed_entries() -> None:
    history = folded("prod", BlueprintSpec(name="prod", entries=[entry("a"), entry("b", "a")]))
    events = publish(history, BlueprintSpec(name="prod", entries=[entry("a")]), published("a", "b"))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, BlueprintPublished)
    assert (event.blueprint_version, event.removed) == (2, ["b"])


def test_publishing_the_same_blueprint_again_decides_nothing() -> None:
    spec = BlueprintSpec(name="prod", entries=[entry("a")])
    history = folded("prod", spec)
    assert publish(history, spec, published("a")) == []


def test_an_entry_naming_an_unpublished_taskset_is_refused() -> None:
    spec = BlueprintSpec(name="prod", entries=[entry("a"), entry("ghost")])
    with pytest.raises(TasksetNotPublished, match="entry ghost names a taskset"):
        publish(BlueprintHistory(name="prod"), spec, published("a"))


def test_pinning_a_version_that_does_not_exist_is_refused() -> None:
    spec = BlueprintSpec(name="prod", entries=[entry("a", version=9)])
    with pytest.raises(BlueprintRefused, match=r"pins version 9, but the latest .* is 3"):
        publish(BlueprintHistory(name="prod"), spec, published("a"))


def test_a_retired_taskset_cannot_join_a_blueprint() -> None:
    tasksets = {"a": TasksetHistory(name="a", version=1, retired=True)}
    with pytest.raises(StateConflict, match="entry a is retired"):
        publish(
            BlueprintHistory(name="prod"),
            BlueprintSpec(name="prod", entries=[entry("a")]),
            tasksets,
        )


def test_a_base_that_is_not_published_is_refused() -> None:
    spec = BlueprintSpec(name="prod", base="core", base_version=4, entries=[entry("a")])
    with pytest.raises(BlueprintRefused, match="base core version 4 is not published"):
        publish(BlueprintHistory(name="prod"), spec, published("a"), folded("core"))


def test_a_blueprint_extends_a_published_base_version() -> None:
    core = folded("core", BlueprintSpec(name="core", entries=[entry("a"), entry("b", "a")]))
    spec = BlueprintSpec(name="prod", base="core", entries=[entry("c", "b")])
    [event] = publish(BlueprintHistory(name="prod"), spec, published("a", "b", "c"), core)
    assert isinstance(event, BlueprintPublished)
    assert [e.taskset for e in event.entries] == ["a", "b", "c"]
    assert (event.base, event.base_version) == ("core", 1)


def test_assigning_pins_a_cluster_to_an_existing_version_only() -> None:
    history = folded("prod", BlueprintSpec(name="prod", entries=[entry("a")]))
    [event] = decide_assign_blueprint(history, "c1", {"c1"}, 1, actor="u", now=NOW)
    assert isinstance(event, BlueprintAssigned)
    assert event.pinned_version == 1
    with pytest.raises(BlueprintRefused, match="has no version 2"):
        decide_assign_blueprint(history, "c1", {"c1"}, 2, actor="u", now=NOW)
    with pytest.raises(ClusterNotFound, match="cluster c9 is not registered"):
        decide_assign_blueprint(history, "c9", {"c1"}, 0, actor="u", now=NOW)


def test_taskset_dependencies_that_close_a_cycle_are_refused() -> None:
    history = TasksetHistory(name="a", version=1)
    with pytest.raises(BlueprintRefused, match="dependsOn cycle: a -> b -> a"):
        decide_taskset_dependencies(history, ["b"], {"b": ["a"]}, actor="u", now=NOW)
    [event] = decide_taskset_dependencies(history, ["b"], {}, actor="u", now=NOW)
    assert isinstance(event, TasksetDependenciesSet)
    assert decide_taskset_dependencies(history, ["b"], {"a": ["b"]}, actor="u", now=NOW) == []


def test_diff_names_added_removed_and_changed_entries() -> None:
    before = ResolvedBlueprint(entries=[entry("a"), entry("b", "a")], selector="", drift_policy="")
    after = ResolvedBlueprint(
        entries=[entry("a", version=2), entry("c")], selector="", drift_policy=""
    )
    changes = {(c.taskset, c.change, tuple(c.fields)) for c in diff_blueprints(before, after)}
    assert changes == {("a", "changed", ("version",)), ("b", "removed", ()), ("c", "added", ())}
