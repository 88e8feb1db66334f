"""Finding the secrets inside documents, and sealing or opening them where they sit.

What counts as secret material:
- a Kubernetes Secret's `data` and `stringData` values (and the last-applied annotation that
  repeats them), in rendered objects and in patches that target a Secret;
- a Helm value (or patch value) that `taskset.sensitive` classifies as secret by its key or
  its shape;
- a value a user marked sensitive by its dotted path (`db.password`, `hosts[0].token`).

Sealing replaces each such value by a text envelope (`sealing.envelope.seal_value`) and leaves
everything else as it was, so documents keep their shape and what is not secret stays
reviewable. Opening replaces every text envelope found anywhere in a document by its value.
Both return the very same object when nothing changed.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec

from sealing.envelope import DataKeys, is_sealed_text, key_id_of_text, open_value, seal_value
from taskset.model import Step, Taskset
from taskset.secrets import LAST_APPLIED, SECRET_FIELDS, is_secret
from taskset.sensitive import is_sensitive, sensitive_value


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def seal_sensitive(
    keys: DataKeys,
    scope: str,
    values: dict[str, Any],
    marked: Collection[str] = (),
    path: str = "",
) -> dict[str, Any]:
    """`values` with every sensitive or marked entry sealed (recursively)."""
    sealed: dict[str, Any] = {}
    for key, value in values.items():
        where = _child(path, str(key))
        if is_sealed_text(value):
            sealed[key] = value
        elif where in marked or is_sensitive(str(key), value):
            sealed[key] = seal_value(keys, scope, value)
        else:
            sealed[key] = _seal_nested(keys, scope, value, marked, where)
    return sealed


def _seal_nested(keys: DataKeys, scope: str, value: Any, marked: Collection[str], path: str) -> Any:
    if isinstance(value, dict):
        return seal_sensitive(keys, scope, value, marked, path)
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if where in marked or (isinstance(item, str) and sensitive_value(item)):
                items.append(seal_value(keys, scope, item))
            else:
                items.append(_seal_nested(keys, scope, item, marked, where))
        return items
    return value


def seal_manifest(keys: DataKeys, scope: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """A Secret with its values sealed; other objects come back unchanged."""
    if not is_secret(manifest):
        return manifest
    sealed = dict(manifest)
    for field in SECRET_FIELDS:
        values = manifest.get(field)
        if isinstance(values, dict):
            sealed[field] = {key: seal_value(keys, scope, value) for key, value in values.items()}
    metadata = manifest.get("metadata")
    if isinstance(metadata, dict):
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            sealed["metadata"] = {
                **metadata,
                "annotations": {
                    **annotations,
                    LAST_APPLIED: seal_value(keys, scope, annotations[LAST_APPLIED]),
                },
            }
    return sealed


def _seal_step(keys: DataKeys, scope: str, step: Step) -> Step:
    sealed = seal_manifest(keys, scope, step.object)
    return step if sealed is step.object else msgspec.structs.replace(step, object=sealed)


def seal_taskset(keys: DataKeys, scope: str, taskset: Taskset) -> Taskset:
    """`taskset` with the values of every Secret it carries sealed, in every phase."""
    return msgspec.structs.replace(
        taskset,
        init=[_seal_step(keys, scope, step) for step in taskset.init],
        install=[_seal_step(keys, scope, step) for step in taskset.install],
        post_install=[_seal_step(keys, scope, step) for step in taskset.post_install],
        pre_delete=[_seal_step(keys, scope, step) for step in taskset.pre_delete],
    )


def _seal_secret_patch_value(keys: DataKeys, scope: str, path: str, value: Any) -> Any:
    """A JSON-patch value aimed at a Secret: sealed when it lands in data or stringData."""
    parts = path.strip("/").split("/")
    if not parts or parts[0] not in SECRET_FIELDS:
        return None
    if len(parts) == 1 and isinstance(value, dict):
        return {key: seal_value(keys, scope, item) for key, item in value.items()}
    return seal_value(keys, scope, value)


def seal_patches(keys: DataKeys, scope: str, patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Override patches with every secret value in them sealed.

    A merge patch on a Secret has its `data`/`stringData` values sealed; a JSON patch
    operation whose `path` lands in them has its `value` sealed; everywhere else values are
    sealed by their key or shape, as Helm values are."""
    sealed_patches = []
    for entry in patches:
        target = entry.get("target")
        secret = isinstance(target, dict) and target.get("kind") == "Secret"
        sealed = dict(entry)
        merge = entry.get("mergePatch")
        if isinstance(merge, dict):
            merge = seal_sensitive(keys, scope, merge)
            if secret:
                for field in SECRET_FIELDS:
                    if isinstance(merge.get(field), dict):
                        merge[field] = {
                            key: seal_value(keys, scope, value)
                            for key, value in merge[field].items()
                        }
            sealed["mergePatch"] = merge
        operations = entry.get("jsonPatch")
        if isinstance(operations, list):
            sealed["jsonPatch"] = [
                _seal_operation(keys, scope, operation, secret) for operation in operations
            ]
        sealed_patches.append(sealed)
    return sealed_patches


def _seal_operation(keys: DataKeys, scope: str, operation: Any, secret: bool) -> Any:
    if not isinstance(operation, dict) or "value" not in operation:
        return operation
    value, path = operation["value"], str(operation.get("path", ""))
    replacement = _seal_secret_patch_value(keys, scope, path, value) if secret else None
    if replacement is None:
        last = path.rstrip("/").rpartition("/")[2]
        if is_sensitive(last, value):
            replacement = seal_value(keys, scope, value)
        else:
            replacement = _seal_nested(keys, scope, value, (), last)
    return {**operation, "value": replacement}


def open_tree(keys: DataKeys, document: Any) -> Any:
    """`document` with every text envelope in it replaced by its value (same object if none)."""
    if is_sealed_text(document):
        return open_value(keys, document)
    if isinstance(document, dict):
        opened = {key: open_tree(keys, value) for key, value in document.items()}
        if all(opened[key] is value for key, value in document.items()):
            return document
        return opened
    if isinstance(document, list):
        items = [open_tree(keys, item) for item in document]
        if all(new is old for new, old in zip(items, document, strict=True)):
            return document
        return items
    return document


def sealed_key_ids(document: Any) -> set[str]:
    """The ids of the data keys the envelopes in `document` were sealed with."""
    found: set[str] = set()
    stack = [document]
    while stack:
        item = stack.pop()
        if is_sealed_text(item):
            found.add(key_id_of_text(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _open_step(keys: DataKeys, step: Step) -> Step:
    opened = open_tree(keys, step.object)
    return step if opened is step.object else msgspec.structs.replace(step, object=opened)


def open_taskset(keys: DataKeys, taskset: Taskset) -> Taskset:
    """`taskset` with every sealed value in its objects opened."""
    steps = [
        [_open_step(keys, step) for step in phase]
        for phase in (taskset.init, taskset.install, taskset.post_install, taskset.pre_delete)
    ]
    if all(
        new is old
        for new_phase, old_phase in zip(
            steps,
            (taskset.init, taskset.install, taskset.post_install, taskset.pre_delete),
            strict=True,
        )
        for new, old in zip(new_phase, old_phase, strict=True)
    ):
        return taskset
    return msgspec.structs.replace(
        taskset, init=steps[0], install=steps[1], post_install=steps[2], pre_delete=steps[3]
    )
