"""Secrets inside tasksets are never shown: every display goes through `mask_secrets` first.

A Secret's `data` and `stringData` values are replaced by one fixed marker. The marker says
nothing about the value (no length, no hash: a short password's hash is as good as the
password), and it is the same every time, so masked output stays byte-identical for identical
input. Keys stay visible: which keys a Secret has is configuration worth reviewing. The
`kubectl.kubernetes.io/last-applied-configuration` annotation of a Secret repeats its data, so
it is masked whole. Only display is masked; what is published and applied is the real object.
"""

from __future__ import annotations

from typing import Any

import msgspec

from taskset.model import Step, Taskset

MASK = "<masked>"
SECRET_FIELDS = ("data", "stringData")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def is_secret(manifest: dict[str, Any]) -> bool:
    return manifest.get("kind") == "Secret" and manifest.get("apiVersion") == "v1"


def mask_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` with its secret values masked; non-Secrets come back unchanged."""
    if not is_secret(manifest):
        return manifest
    masked = dict(manifest)
    for field in SECRET_FIELDS:
        values = manifest.get(field)
        if isinstance(values, dict):
            masked[field] = dict.fromkeys(values, MASK)
    metadata = manifest.get("metadata")
    if isinstance(metadata, dict):
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            masked["metadata"] = {
                **metadata,
                "annotations": {**annotations, LAST_APPLIED: MASK},
            }
    return masked


def _mask_step(step: Step) -> Step:
    masked = mask_manifest(step.object)
    return step if masked is step.object else msgspec.structs.replace(step, object=masked)


def mask_secrets(taskset: Taskset) -> Taskset:
    """`taskset` with the values of every Secret it carries masked, in every phase."""
    return msgspec.structs.replace(
        taskset,
        init=[_mask_step(step) for step in taskset.init],
        install=[_mask_step(step) for step in taskset.install],
        post_install=[_mask_step(step) for step in taskset.post_install],
        pre_delete=[_mask_step(step) for step in taskset.pre_delete],
    )
