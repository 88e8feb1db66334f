"""The simulated cluster: phase order, pruning, removal, injected failures and drift."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edge_connector.errors import ApplyFailed
from simulator.errors import SimulationError
from simulator.executor import TASKSET_LABEL, SimExecutor
from taskset.digest import digest_of
from taskset.model import ClusterTask, Step, Taskset

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def obj(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "apps"},
    }
    if spec:
        manifest["spec"] = spec
    return manifest


def task(taskset: Taskset, generation: int = 1, removed: bool = False) -> ClusterTask:
    return ClusterTask(
        cluster="sim",
        taskset_name=taskset.name,
        version=generation,
        generation=generation,
        digest=digest_of(taskset),
        taskset=taskset,
        removed=removed,
    )


WEB = Taskset(
    name="web",
    init=[Step(object=obj("Namespace", "apps"))],
    install=[Step(object=obj("ConfigMap", "a")), Step(object=obj("Deployment", "web", replicas=2))],
    post_install=[Step(object=obj("ConfigMap", "done"), job=obj("Job", "migrate"))],
    pre_delete=[Step(object=obj("Job", "cleanup"))],
)


def sim() -> SimExecutor:
    return SimExecutor(name="sim", clock=lambda: NOW)


async def test_phases_are_applied_in_order_and_objects_carry_their_taskset_label() -> None:
    cluster = sim()
    result = await cluster.apply(task(WEB))
    assert result.objects == 4
    assert [(r.phase, r.action) for r in cluster.history] == [
        ("init", "apply"),
        ("install", "apply"),
        ("install", "apply"),
        ("postInstall", "apply"),
        ("postInstall", "job"),
    ]
    assert cluster.objects["Deployment/apps/web"].manifest["metadata"]["labels"] == {
        TASKSET_LABEL: "web"
    }
    assert cluster.applied["web"].generation == 1


async def test_applying_twice_changes_no_live_object() -> None:
    cluster = sim()
    await cluster.apply(task(WEB))
    before = {key: live.resource_version for key, live in cluster.objects.items()}
    await cluster.apply(task(WEB))
    assert {key: live.resource_version for key, live in cluster.objects.items()} == before


async def test_a_new_version_prunes_objects_it_no_longer_has() -> None:
    cluster = sim()
    await cluster.apply(task(WEB))
    smaller = Taskset(name="web", install=[Step(object=obj("Deployment", "web", replicas=3))])
    await cluster.apply(task(smaller, generation=2))
    assert cluster.owned_objects("web") == ["Deployment/apps/web"]
    assert cluster.objects["Deployment/apps/web"].manifest["spec"] == {"replicas": 3}


async def test_removal_runs_pre_delete_then_deletes_every_object() -> None:
    cluster = sim()
    await cluster.apply(task(WEB))
    cluster.history.clear()
    result = await cluster.remove(task(WEB, generation=2, removed=True))
    assert result.objects == 0
    assert cluster.history[0].phase == "preDelete"
    assert cluster.history[0].action == "run"
    assert {r.action for r in cluster.history[1:]} == {"delete"}
    assert cluster.objects == {}
    assert "web" not in cluster.applied


async def test_removing_what_is_not_there_succeeds_without_running_hooks() -> None:
    cluster = sim()
    await cluster.remove(task(WEB, removed=True))
    assert cluster.history == []


async def test_an_injected_failure_names_phase_and_object_and_fires_once() -> None:
    cluster = sim()
    cluster.fail("web", phase="install", object="Deployment/apps/web", reason="quota")
    with pytest.raises(ApplyFailed) as failed:
        await cluster.apply(task(WEB))
    assert (failed.value.phase, failed.value.object, failed.value.reason) == (
        "install",
        "Deployment/apps/web",
        "quota",
    )
    assert "web" not in cluster.applied
    await cluster.apply(task(WEB))
    assert cluster.applied["web"].generation == 1


async def test_edits_and_deletions_come_out_of_the_drift_stream() -> None:
    cluster = sim()
    await cluster.apply(task(WEB))
    edited = cluster.edit("Deployment/apps/web", "/spec/replicas", 9)
    deleted = cluster.delete("ConfigMap/apps/a")
    stream = cluster.drift()
    assert await anext(stream) == edited
    assert await anext(stream) == deleted
    assert edited.fields == ["/spec/replicas"]
    assert edited.taskset == "web"
    assert deleted.deleted
    assert edited.observation != deleted.observation
    assert cluster.objects["Deployment/apps/web"].manifest["spec"]["replicas"] == 9
    await stream.aclose()


async def test_an_edit_changes_the_live_object_never_the_desired_state_it_came_from() -> None:
    cluster = sim()
    desired = task(WEB)
    await cluster.apply(desired)
    cluster.edit("Deployment/apps/web", "/spec/replicas", 9)
    cluster.edit("Deployment/apps/web", "/metadata/labels/team", "ops")
    assert desired.taskset is not None
    assert desired.taskset.install[1].object["spec"] == {"replicas": 2}
    assert desired.taskset.install[1].object["metadata"] == {"name": "web", "namespace": "apps"}
    assert cluster.objects["Deployment/apps/web"].manifest["spec"] == {"replicas": 9}
    # Re-applying the same desired state corrects the edit.
    await cluster.apply(desired)
    assert cluster.objects["Deployment/apps/web"].manifest["spec"] == {"replicas": 2}


async def test_inventory_digests_the_live_objects_so_drift_changes_it() -> None:
    cluster = sim()
    await cluster.apply(task(WEB))
    before = await cluster.inventory()
    cluster.edit("Deployment/apps/web", "/spec/replicas", 9)
    after = await cluster.inventory()
    assert before.live_digest != after.live_digest
    assert before.applied == after.applied
    assert after.objects == 4


def test_editing_an_unknown_object_is_a_clear_error() -> None:
    with pytest.raises(SimulationError, match="no live object"):
        sim().edit("Deployment/apps/nope", "/spec/replicas", 1)


async def test_a_cluster_keeps_only_its_latest_step_records() -> None:
    cluster = SimExecutor(name="sim", clock=lambda: NOW, history_limit=10)
    for generation in range(1, 8):
        await cluster.apply(task(WEB, generation=generation))
    assert 5 <= len(cluster.history) <= 10
    assert [(r.generation, r.phase, r.action) for r in cluster.history[-5:]] == [
        (7, "init", "apply"),
        (7, "install", "apply"),
        (7, "install", "apply"),
        (7, "postInstall", "apply"),
        (7, "postInstall", "job"),
    ]
