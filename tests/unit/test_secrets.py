"""Secret values never reach a display: masked with one fixed marker, keys left visible."""

from __future__ import annotations

from typing import Any

from taskset.model import Step, Taskset
from taskset.secrets import MASK, mask_manifest, mask_secrets


def secret(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, **fields}


def test_data_and_string_data_values_are_masked_and_keys_kept() -> None:
    masked = mask_manifest(secret(data={"password": "aHVudGVyMg=="}, stringData={"user": "bob"}))
    assert masked["data"] == {"password": MASK}
    assert masked["stringData"] == {"user": MASK}


def test_the_last_applied_annotation_of_a_secret_is_masked_whole() -> None:
    annotation = "kubectl.kubernetes.io/last-applied-configuration"
    masked = mask_manifest(
        secret(metadata={"name": "s", "annotations": {annotation: '{"data":{"p":"x"}}', "a": "b"}})
    )
    assert masked["metadata"]["annotations"] == {annotation: MASK, "a": "b"}


def test_other_objects_are_left_alone_and_the_original_is_not_changed() -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"a": "b"},
    }
    original = secret(data={"k": "dg=="})
    assert mask_manifest(config) is config
    mask_manifest(original)
    assert original["data"] == {"k": "dg=="}


def test_every_phase_of_a_taskset_is_masked() -> None:
    taskset = Taskset(
        name="t",
        init=[Step(object=secret(data={"a": "YQ=="}))],
        install=[Step(object=secret(stringData={"b": "b"}))],
        post_install=[Step(object=secret(data={"c": "Yw=="}))],
        pre_delete=[Step(object=secret(data={"d": "ZA=="}))],
    )
    masked = mask_secrets(taskset)
    values = [
        value
        for _, step in masked.steps()
        for field in ("data", "stringData")
        for value in step.object.get(field, {}).values()
    ]
    assert values == [MASK, MASK, MASK, MASK]
    assert taskset.init[0].object["data"] == {"a": "YQ=="}
