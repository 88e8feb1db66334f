"""Ownership of objects between tasksets: who may apply over what, and what removal keeps."""

from __future__ import annotations

from typing import Any

import pytest

from cluster_controller.ownership import judge_ownership, keeps_object, owner_of


def labelled(task: str | None, namespace: str = "fleetbus-system") -> dict[str, Any]:
    labels = {"app": "x"}
    if task is not None:
        labels |= {
            "app.kubernetes.io/managed-by": "fleetbus",
            "fleetbus.io/task": task,
            "fleetbus.io/task-namespace": namespace,
            "fleetbus.io/step": f"{task}-0123456789",
        }
    return {"metadata": {"name": "shared", "labels": labels}}


def judge(live: dict[str, Any] | None, *, adopt: bool = False) -> Any:
    return judge_ownership(
        live, task="second", task_namespace="fleetbus-system", adopt=adopt, what="ConfigMap/a/b"
    )


def test_a_new_object_or_one_of_our_own_may_be_applied() -> None:
    assert judge(None).allowed
    mine = judge(labelled("second"))
    assert mine.allowed
    assert not mine.adopting


def test_an_object_of_another_taskset_is_a_conflict_naming_it() -> None:
    verdict = judge(labelled("first"))
    assert not verdict.allowed
    assert verdict.owner is not None
    assert verdict.owner.task == "first"
    assert verdict.message.startswith("ConfigMap/a/b is owned by taskset first;")


def test_a_pre_existing_object_is_a_conflict() -> None:
    verdict = judge(labelled(None))
    assert not verdict.allowed
    assert "exists already and was not applied by fleetbus" in verdict.message


@pytest.mark.parametrize("task", ["first", None])
def test_adopt_takes_either_over(task: str | None) -> None:
    verdict = judge(labelled(task), adopt=True)
    assert verdict.allowed
    assert verdict.adopting


def test_the_same_task_name_in_another_namespace_is_another_owner() -> None:
    assert not judge(labelled("second", namespace="elsewhere")).allowed
    assert owner_of(labelled(None)) is None


def test_resource_policy_keep_on_either_manifest_keeps_the_object() -> None:
    kept = {"metadata": {"annotations": {"helm.sh/resource-policy": "keep"}}}
    assert keeps_object(None, kept)
    assert keeps_object(kept, {"metadata": {}})
    assert not keeps_object({"metadata": {"annotations": {"helm.sh/resource-policy": "delete"}}})
