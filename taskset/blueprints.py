"""Blueprints as data: a fleet's standard stack, and the `dependsOn` order inside it.

A blueprint is a named list of entries, one per taskset, each pinned to a version (or following
the latest), with its own Helm values and the other entries it depends on. A blueprint may
extend a base blueprint: the base's entries are kept, an entry of the same taskset replaces the
base's, and `remove` drops base entries. What is published is always the resolved list, so a
version means the same thing forever even when its base moves on.

Everything here is pure: parsing the file a user writes, resolving the base, and checking the
dependency graph (every `dependsOn` names an entry of the blueprint, and there is no cycle; a
cycle is refused with its members named in order, `a -> b -> a`). The scheduler uses the same
graph per cluster, so the order is decided once, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from taskset.errors import FleetbusError
from taskset.names import check_name
from taskset.selectors import InvalidSelector, parse_selector

BlueprintDriftPolicy = Literal["", "correct", "report", "ignore"]
"""`""`: each taskset keeps the drift policy it was published with."""

_DRIFT_POLICIES = ("", "correct", "report", "ignore")
MAX_VERSION = 2**31 - 1
"""Versions are counters; anything larger is a mistake, refused before it reaches the log."""


class BlueprintError(FleetbusError):
    """A blueprint that cannot be published as written; the message names the entry or field."""


class DependencyCycle(BlueprintError):
    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__("dependsOn cycle: " + " -> ".join(cycle))


class BlueprintEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One taskset of a blueprint, as stored in its events."""

    taskset: str
    version: int = 0
    """The taskset version the blueprint pins; 0 follows the latest published version."""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    """Helm values for this entry (lowest precedence: cluster overrides still win)."""
    depends_on: list[str] = msgspec.field(default_factory=list)
    """Tasksets of the same blueprint that must be applied and Ready on a cluster first."""


class BlueprintSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a user publishes: the entries, or a base and the changes made to it."""

    name: str
    entries: list[BlueprintEntry] = msgspec.field(default_factory=list)
    base: str = ""
    base_version: int = 0
    """The base's version to extend; 0 extends its latest version."""
    remove: list[str] = msgspec.field(default_factory=list)
    """Tasksets of the base this blueprint does not carry."""
    selector: str | None = None
    """Which clusters get the blueprint; None inherits the base's (and else no selector)."""
    drift_policy: BlueprintDriftPolicy | None = None


class ResolvedBlueprint(msgspec.Struct, frozen=True, kw_only=True):
    """A blueprint with its base folded in: what one version of it means."""

    entries: list[BlueprintEntry]
    selector: str
    drift_policy: BlueprintDriftPolicy


def _field(document: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = document.get(key)
    if value is not None and not isinstance(value, kind):
        raise BlueprintError(f"{where}: field {key} must be a {kind.__name__}")
    return value


def parse_blueprint(document: Any, where: str = "blueprint") -> BlueprintSpec:
    """A `BlueprintSpec` from the YAML a user writes (camelCase keys), every field checked.

    ```yaml
    name: platform
    base: core            # optional; baseVersion pins it
    selector: env=prod
    driftPolicy: correct
    entries:
      - taskset: cert-manager
        version: 3        # optional; omitted follows the latest
      - taskset: ingress
        dependsOn: [cert-manager]
        values: {replicas: 2}
    remove: [fluentd]
    ```
    """
    if not isinstance(document, Mapping):
        raise BlueprintError(f"{where}: a blueprint is a mapping with name and entries")
    known = {"name", "base", "baseVersion", "selector", "driftPolicy", "entries", "remove"}
    unknown = sorted(str(key) for key in document if key not in known)
    if unknown:
        raise BlueprintError(
            f"{where}: unknown field {unknown[0]} (known: {', '.join(sorted(known))})"
        )
    name = _field(document, "name", str, where)
    if not name:
        raise BlueprintError(f"{where}: field name is required")
    entries: list[BlueprintEntry] = []
    for index, raw in enumerate(_field(document, "entries", list, where) or []):
        entries.append(_parse_entry(raw, f"{where}: entries[{index}]"))
    remove = _field(document, "remove", list, where) or []
    if not all(isinstance(item, str) for item in remove):
        raise BlueprintError(f"{where}: field remove must list taskset names")
    base_version = document.get("baseVersion", 0)
    if (
        isinstance(base_version, bool)
        or not isinstance(base_version, int)
        or not 0 <= base_version <= MAX_VERSION
    ):
        raise BlueprintError(f"{where}: baseVersion must be a blueprint version (1, 2, ...)")
    drift = document.get("driftPolicy")
    if drift is not None and drift not in _DRIFT_POLICIES:
        raise BlueprintError(
            f"{where}: driftPolicy {drift!r} is not one of correct, report, ignore"
        )
    return BlueprintSpec(
        name=name,
        entries=entries,
        base=_field(document, "base", str, where) or "",
        base_version=base_version,
        remove=list(remove),
        selector=_field(document, "selector", str, where),
        drift_policy=drift,
    )


def _parse_entry(raw: Any, where: str) -> BlueprintEntry:
    if not isinstance(raw, Mapping):
        raise BlueprintError(f"{where}: an entry is a mapping with a taskset")
    unknown = sorted(
        str(key) for key in raw if key not in {"taskset", "version", "values", "dependsOn"}
    )
    if unknown:
        raise BlueprintError(f"{where}: unknown field {unknown[0]}")
    taskset = _field(raw, "taskset", str, where)
    if not taskset:
        raise BlueprintError(f"{where}: field taskset is required")
    version = raw.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_VERSION:
        raise BlueprintError(f"{where}: version must be a taskset version (1, 2, ...)")
    depends_on = _field(raw, "dependsOn", list, where) or []
    if not all(isinstance(item, str) for item in depends_on):
        raise BlueprintError(f"{where}: dependsOn must list taskset names")
    return BlueprintEntry(
        taskset=taskset,
        version=version,
        values=dict(_field(raw, "values", dict, where) or {}),
        depends_on=list(depends_on),
    )


def resolve_blueprint(spec: BlueprintSpec, base: ResolvedBlueprint | None) -> ResolvedBlueprint:
    """The spec with its base folded in, checked whole: names, selector, dependencies, cycles."""
    check_name("blueprint", spec.name)
    if spec.base and base is None:
        raise BlueprintError(f"blueprint {spec.name}: base {spec.base} is not published")
    by_taskset: dict[str, BlueprintEntry] = {}
    if base is not None:
        by_taskset = {entry.taskset: entry for entry in base.entries}
        for name in spec.remove:
            if name not in by_taskset:
                raise BlueprintError(
                    f"blueprint {spec.name}: remove names {name}, which base {spec.base} "
                    "does not have"
                )
            del by_taskset[name]
    elif spec.remove:
        raise BlueprintError(f"blueprint {spec.name}: remove needs a base blueprint")
    seen: set[str] = set()
    for entry in spec.entries:
        check_name("taskset", entry.taskset)
        if entry.taskset in seen:
            raise BlueprintError(f"blueprint {spec.name}: taskset {entry.taskset} is listed twice")
        seen.add(entry.taskset)
        by_taskset[entry.taskset] = entry
    if not by_taskset:
        raise BlueprintError(f"blueprint {spec.name} has no entries")
    entries = [by_taskset[name] for name in sorted(by_taskset)]
    check_dependencies(spec.name, entries)
    selector = spec.selector if spec.selector is not None else (base.selector if base else "")
    if selector:
        try:
            parse_selector(selector)
        except InvalidSelector as e:
            raise BlueprintError(f"blueprint {spec.name}: selector: {e}") from e
    drift: BlueprintDriftPolicy = (
        spec.drift_policy
        if spec.drift_policy is not None
        else (base.drift_policy if base is not None else "")
    )
    return ResolvedBlueprint(entries=entries, selector=selector, drift_policy=drift)


def check_dependencies(blueprint: str, entries: Sequence[BlueprintEntry]) -> None:
    """Every `dependsOn` names another entry, and the graph has no cycle (named if found)."""
    names = {entry.taskset for entry in entries}
    for entry in entries:
        for dependency in entry.depends_on:
            if dependency == entry.taskset:
                raise DependencyCycle([entry.taskset, entry.taskset])
            if dependency not in names:
                raise BlueprintError(
                    f"blueprint {blueprint}: entry {entry.taskset} dependsOn {dependency}, "
                    "which is not an entry of the blueprint"
                )
    cycle = find_cycle({entry.taskset: entry.depends_on for entry in entries})
    if cycle:
        raise DependencyCycle(cycle)


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """A cycle of `graph` (node -> what it depends on) as `[a, b, ..., a]`, or [] if none.

    Depth-first with colours, visiting nodes and edges in name order so the answer is stable.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    path: list[str] = []

    def visit(node: str) -> list[str]:
        colour[node] = grey
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            state = colour.get(successor, black)
            if state == grey:
                return [*path[path.index(successor) :], successor]
            if state == white:
                found = visit(successor)
                if found:
                    return found
        path.pop()
        colour[node] = black
        return []

    for node in sorted(graph):
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return []


def dependency_order(entries: Sequence[BlueprintEntry]) -> list[str]:
    """Tasksets in an order where each comes after what it depends on (ties by name)."""
    remaining = {entry.taskset: set(entry.depends_on) for entry in entries}
    ordered: list[str] = []
    while remaining:
        ready = sorted(name for name, needs in remaining.items() if not needs - set(ordered))
        if not ready:
            raise DependencyCycle(find_cycle(remaining))
        ordered.extend(ready)
        for name in ready:
            del remaining[name]
    return ordered
