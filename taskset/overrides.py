"""Overrides: how one snapshot becomes a different Taskset on each cluster.

An override customises a taskset for one cluster or for every cluster a label selector picks,
with Helm values (the chart is rendered again with them) and/or patches on named objects
(RFC 7386 merge patches and RFC 6902 JSON patches, both implemented here so this package stays
pure and dependency-light).

Precedence is deterministic and documented because people rely on it: selector overrides apply
first, then cluster-specific ones, each group in name order, so a cluster-specific override
always wins over a selector one. The same functions serve the scheduler (what a cluster gets),
`override preview` (what an override changes) and `state --at` (what a cluster had), so the
three can never disagree.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import msgspec
import yaml

from taskset.capabilities import RenderContext
from taskset.errors import FleetbusError
from taskset.model import PHASES, ObjectRef, Phase, Step, Taskset
from taskset.projects import project_of
from taskset.selectors import parse_selector


class OverrideError(FleetbusError):
    """An override that cannot be read or cannot apply; the message names file, object, path."""


class PatchFailed(OverrideError):
    pass


# --- data ------------------------------------------------------------------------------------


class PatchTarget(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


class ObjectPatch(msgspec.Struct, frozen=True, kw_only=True):
    """One patch on one object: exactly one of `merge_patch` (RFC 7386), `json_patch` (6902)."""

    target: PatchTarget
    merge_patch: dict[str, Any] | None = None
    json_patch: list[dict[str, Any]] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The form stored in `OverrideSet.patches` (and written in patch files)."""
        wire: dict[str, Any] = {"target": msgspec.to_builtins(self.target)}
        if self.merge_patch is not None:
            wire["mergePatch"] = self.merge_patch
        if self.json_patch is not None:
            wire["jsonPatch"] = self.json_patch
        return wire


class Override(msgspec.Struct, frozen=True, kw_only=True):
    """An override as the scheduler holds it; `revision` tells two settings of one name apart."""

    taskset: str
    name: str
    cluster: str = ""
    selector: str = ""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    patches: tuple[ObjectPatch, ...] = ()
    revision: str = ""

    def applies_to(self, cluster: str, labels: Mapping[str, str]) -> bool:
        """Whether it customises `cluster`: only ever one of its taskset's own project (a
        shared taskset on another project's cluster is that project's to customise)."""
        if project_of(cluster) != project_of(self.taskset):
            return False
        if self.cluster:
            return self.cluster == cluster
        return bool(self.selector) and parse_selector(self.selector).matches(labels)


class HelmRenderer(Protocol):
    """Renders a chart archive kept on the hub with the given values into a Taskset.

    `previous` is the published version the render customizes: values the chart generates
    while rendering (passwords) keep what it holds instead of changing on every render.
    Implemented by the composition root with the Helm engine; faked in unit tests.
    """

    def render(
        self,
        chart_archive_digest: str,
        values: dict[str, Any],
        name: str,
        namespace: str,
        previous: Taskset | None = None,
        context: RenderContext | None = None,
    ) -> Taskset: ...


# --- reading patch files -----------------------------------------------------------------------


def parse_patches(raw: Any, source: str = "patch") -> tuple[ObjectPatch, ...]:
    """Read `{target, mergePatch|jsonPatch}` entries (one, or a list of them)."""
    entries = raw if isinstance(raw, list) else [raw]
    if not entries:
        raise OverrideError(f"{source}: no patches in it")
    patches = []
    for index, entry in enumerate(entries, start=1):
        where = f"{source}: patch {index}"
        if not isinstance(entry, dict):
            raise OverrideError(f"{where} is not a mapping")
        unknown = set(entry) - {"target", "mergePatch", "jsonPatch"}
        if unknown:
            raise OverrideError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        target = entry.get("target")
        if not isinstance(target, dict) or not target.get("kind") or not target.get("name"):
            raise OverrideError(f"{where}: `target` needs `kind` and `name` (and `namespace`)")
        extra = set(target) - {"kind", "name", "namespace"}
        if extra:
            raise OverrideError(f"{where}: unknown target field(s) {', '.join(sorted(extra))}")
        has_merge = "mergePatch" in entry
        has_json = "jsonPatch" in entry
        if has_merge == has_json:
            raise OverrideError(f"{where}: give exactly one of `mergePatch` or `jsonPatch`")
        merge = entry.get("mergePatch")
        ops = entry.get("jsonPatch")
        if has_merge and not isinstance(merge, dict):
            raise OverrideError(f"{where}: `mergePatch` must be a mapping")
        if has_json:
            _check_operations(ops, where)
        patches.append(
            ObjectPatch(
                target=PatchTarget(
                    kind=str(target["kind"]),
                    name=str(target["name"]),
                    namespace=str(target.get("namespace") or ""),
                ),
                merge_patch=merge if has_merge else None,
                json_patch=ops if has_json else None,
            )
        )
    return tuple(patches)


def _check_operations(ops: Any, where: str) -> None:
    if not isinstance(ops, list) or not ops:
        raise OverrideError(f"{where}: `jsonPatch` must be a non-empty list of operations")
    for number, op in enumerate(ops, start=1):
        if not isinstance(op, dict) or op.get("op") not in _OPERATIONS:
            raise OverrideError(
                f"{where}, operation {number}: `op` must be one of {', '.join(_OPERATIONS)}"
            )
        if not isinstance(op.get("path"), str):
            raise OverrideError(f"{where}, operation {number}: `path` must be a JSON pointer")
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise OverrideError(f"{where}, operation {number}: `{op['op']}` needs a `value`")
        if op["op"] in ("move", "copy") and not isinstance(op.get("from"), str):
            raise OverrideError(f"{where}, operation {number}: `{op['op']}` needs `from`")


# --- RFC 7386 ----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def merge_values(base: Mapping[str, Any], layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Helm-style values merge: each layer deep-merged over the previous, null removes a key."""
    merged: Any = copy.deepcopy(dict(base))
    for layer in layers:
        merged = merge_patch(merged, dict(layer))
    return dict(merged)


# --- RFC 6902 ----------------------------------------------------------------------------------

_OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchFailed(f"JSON pointer {path!r} must start with '/'")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchFailed(f"{path}: {token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchFailed(f"{path}: index {index} is out of range (length {len(container)})")
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for depth, token in enumerate(tokens[:-1]):
        here = "/" + "/".join(tokens[: depth + 1])
        if isinstance(node, dict):
            if token not in node:
                raise PatchFailed(f"{path}: {here} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, allow_end=False)]
        else:
            raise PatchFailed(f"{path}: {here} is inside a scalar")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchFailed(f"{path} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, allow_end=False)]
    raise PatchFailed(f"{path} is inside a scalar")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), value)
    else:
        raise PatchFailed(f"{path} is inside a scalar")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchFailed("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchFailed(f"{path} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path, allow_end=False))
    raise PatchFailed(f"{path} is inside a scalar")


def apply_json_patch(document: Any, operations: Sequence[Mapping[str, Any]]) -> Any:
    """RFC 6902 JSON Patch on a copy of `document`; all operations apply or none."""
    doc = copy.deepcopy(document)
    for number, op in enumerate(operations, start=1):
        path = str(op.get("path", ""))
        try:
            match op.get("op"):
                case "add":
                    doc = _add(doc, path, copy.deepcopy(op["value"]))
                case "remove":
                    doc, _ = _remove(doc, path)
                case "replace":
                    _get(doc, path)
                    if _pointer(path):
                        doc, _ = _remove(doc, path)
                    doc = _add(doc, path, copy.deepcopy(op["value"]))
                case "move":
                    source = str(op["from"])
                    if path.startswith(source + "/"):
                        raise PatchFailed(f"cannot move {source} into its own child {path}")
                    doc, value = _remove(doc, source)
                    doc = _add(doc, path, value)
                case "copy":
                    doc = _add(doc, path, copy.deepcopy(_get(doc, str(op["from"]))))
                case "test":
                    if _get(doc, path) != op["value"]:
                        raise PatchFailed(f"test failed: {path} is not {op['value']!r}")
                case other:
                    raise PatchFailed(f"unknown operation {other!r}")
        except PatchFailed as e:
            raise PatchFailed(f"operation {number} ({op.get('op')} {path}): {e}") from e
    return doc


# --- applying overrides to a Taskset -------------------------------------------------------------


def _effective_namespace(namespace: str, taskset: Taskset) -> str:
    return namespace or taskset.namespace


def _targets(step: Step, target: PatchTarget, taskset: Taskset) -> bool:
    ref = step.ref
    return (
        ref.kind == target.kind
        and ref.name == target.name
        and _effective_namespace(ref.namespace, taskset)
        == _effective_namespace(target.namespace, taskset)
    )


def missing_targets(taskset: Taskset, patches: Iterable[ObjectPatch]) -> list[PatchTarget]:
    """The patch targets that name no object of `taskset`."""
    steps = [step for _, step in taskset.steps()]
    return [
        patch.target
        for patch in patches
        if not any(_targets(step, patch.target, taskset) for step in steps)
    ]


def apply_patches(taskset: Taskset, patches: Iterable[ObjectPatch], origin: str = "") -> Taskset:
    """Apply patches in order to the objects they target; a patch with no target fails."""
    phases: dict[Phase, list[Step]] = {phase: list(taskset.phase(phase)) for phase in PHASES}
    for patch in patches:
        hit = False
        for phase in PHASES:
            steps = phases[phase]
            for index, step in enumerate(steps):
                if not _targets(step, patch.target, taskset):
                    continue
                hit = True
                steps[index] = msgspec.structs.replace(
                    step, object=_patched(step.object, patch, origin)
                )
        if not hit:
            raise OverrideError(
                f"{origin or 'override'}: no object {patch.target} in taskset {taskset.name}"
            )
    return msgspec.structs.replace(
        taskset,
        init=phases["init"],
        install=phases["install"],
        post_install=phases["postInstall"],
        pre_delete=phases["preDelete"],
    )


def _patched(manifest: dict[str, Any], patch: ObjectPatch, origin: str) -> dict[str, Any]:
    before = ObjectRef.of(manifest)
    try:
        if patch.merge_patch is not None:
            after = merge_patch(manifest, patch.merge_patch)
        else:
            after = apply_json_patch(manifest, patch.json_patch or [])
    except PatchFailed as e:
        raise PatchFailed(f"{origin or 'override'}: patch on {patch.target}: {e}") from e
    if not isinstance(after, dict):
        raise PatchFailed(f"{origin or 'override'}: patch on {patch.target} left no object")
    moved = ObjectRef.of(after)
    if (moved.kind, moved.name, moved.namespace) != (before.kind, before.name, before.namespace):
        raise PatchFailed(
            f"{origin or 'override'}: patch on {patch.target} would rename it to {moved}; "
            "an override may change an object, not which object it is"
        )
    return after


# --- which overrides a cluster gets ----------------------------------------------------------


def precedence_key(override: Override) -> tuple[int, str]:
    """Selector overrides first, cluster-specific last (they win); by name within a group."""
    return (1 if override.cluster else 0, override.name)


def overrides_for(
    cluster: str, labels: Mapping[str, str], overrides: Iterable[Override]
) -> list[Override]:
    """The overrides that apply to `cluster`, in the order they are applied."""
    return sorted(
        (o for o in overrides if o.applies_to(cluster, labels)),
        key=precedence_key,
    )


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What customising needs of a published version: its Taskset and how to re-render it."""

    taskset: Taskset
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    chart_archive: str = ""


class RefusedOverride(OverrideError):
    pass


def customize(
    snapshot: Snapshot,
    applicable: Sequence[Override],
    renderer: HelmRenderer | None,
    context: RenderContext | None = None,
) -> Taskset:
    """Snapshot ⊕ overrides (already in precedence order) for one cluster.

    Values overrides re-render the chart with base values merged with every override's values
    in order; patches then apply in the same order. A `context` (the cluster's capabilities and
    release, for a chart that consults them) re-renders the chart for that cluster too.
    """
    result = snapshot.taskset
    layers = [o.values for o in applicable if o.values]
    if context is not None and snapshot.chart_archive and renderer is not None:
        result = renderer.render(
            snapshot.chart_archive,
            merge_values(snapshot.values, layers),
            result.name,
            result.namespace,
            previous=snapshot.taskset,
            context=context,
        )
        if snapshot.taskset.source is not None and result.source is None:
            result = msgspec.structs.replace(result, source=snapshot.taskset.source)
        result = msgspec.structs.replace(
            result,
            drift_policy=snapshot.taskset.drift_policy,
            ignore_paths=snapshot.taskset.ignore_paths,
        )
    elif layers:
        if not snapshot.chart_archive:
            names = ", ".join(o.name for o in applicable if o.values)
            raise RefusedOverride(
                f"override(s) {names} set Helm values, but taskset {result.name} was not "
                "published from a Helm chart"
            )
        if renderer is None:
            raise RefusedOverride("values overrides need the Helm engine, which is not available")
        result = renderer.render(
            snapshot.chart_archive,
            merge_values(snapshot.values, layers),
            result.name,
            result.namespace,
            previous=snapshot.taskset,
        )
        if snapshot.taskset.source is not None and result.source is None:
            result = msgspec.structs.replace(result, source=snapshot.taskset.source)
        result = msgspec.structs.replace(
            result,
            drift_policy=snapshot.taskset.drift_policy,
            ignore_paths=snapshot.taskset.ignore_paths,
        )
    for override in applicable:
        if override.patches:
            result = apply_patches(result, override.patches, f"override {override.name}")
    return result


# --- showing what overrides do ---------------------------------------------------------------

SECRET_FIELDS = ("data", "stringData")
MASK = "<masked>"
MASK_CHANGED = "<masked, changed>"


def redact_secrets(
    manifest: dict[str, Any], compared_with: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A copy of `manifest` with every Secret value replaced by a fixed marker.

    No length or hash of a value is shown (a short password's hash is as good as the password).
    When `compared_with` is given, values that differ from it are marked as changed, so a diff
    still shows that an override changes a Secret without showing what to.
    """
    if manifest.get("kind") != "Secret":
        return manifest
    shown = dict(manifest)
    for field in SECRET_FIELDS:
        values = manifest.get(field)
        if isinstance(values, dict):
            other = (compared_with or {}).get(field)
            other = other if isinstance(other, dict) else {}
            shown[field] = {
                key: MASK_CHANGED
                if compared_with is not None and other.get(key, object()) != value
                else MASK
                for key, value in values.items()
            }
    return shown


def manifest_yaml(manifest: dict[str, Any], compared_with: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(
        redact_secrets(manifest, compared_with), sort_keys=True, default_flow_style=False
    )


def _objects_by_place(taskset: Taskset) -> dict[tuple[str, str], dict[str, Any]]:
    return {(phase, str(step.ref)): step.object for phase, step in taskset.steps()}


def preview_diff(before: Taskset, after: Taskset) -> str:
    """Unified diff, object by object, of the YAML of two Tasksets (Secrets redacted)."""
    old = _objects_by_place(before)
    new = _objects_by_place(after)
    chunks: list[str] = []
    for place in sorted(set(old) | set(new)):
        phase, ref = place
        a = manifest_yaml(old[place]).splitlines(keepends=True) if place in old else []
        b = (
            manifest_yaml(new[place], old.get(place, {})).splitlines(keepends=True)
            if place in new
            else []
        )
        if a == b:
            continue
        chunks.extend(
            difflib.unified_diff(
                a,
                b,
                fromfile=f"a/{phase}/{ref}" if place in old else "/dev/null",
                tofile=f"b/{phase}/{ref}" if place in new else "/dev/null",
            )
        )
    return "".join(chunks)
