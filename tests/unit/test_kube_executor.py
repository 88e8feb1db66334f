"""The Kubernetes executor's pure parts: the resources it writes and how it reads the answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edge_connector.errors import ApplyFailed
from edge_connector.kube_executor import (
    DRIFT_REPORTED,
    applied_tasks,
    drift_observation,
    read_task,
    step_name,
    task_resources,
)
from taskset.digest import digest_of
from taskset.model import ClusterTask, ObjectRef, Step, Taskset


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}


TASKSET = Taskset(
    name="shop",
    namespace="shop",
    drift_policy="report",
    ignore_paths=["/spec/replicas"],
    init=[Step(object=configmap("seed"), job={"kind": "Job", "metadata": {"name": "j"}})],
    install=[Step(object=configmap("a")), Step(object=configmap("b"))],
    post_install=[Step(object=configmap("smoke"), wait="none")],
    pre_delete=[Step(object=configmap("bye"))],
)
TASK = ClusterTask(
    cluster="edge-1",
    taskset_name="shop",
    version=3,
    generation=7,
    digest=digest_of(TASKSET),
    taskset=TASKSET,
)


def test_each_object_gets_its_own_step_and_the_task_names_them_by_phase() -> None:
    resources = task_resources(TASK, "fleetbus-system")

    names = [s["metadata"]["name"] for s in resources.steps]
    spec = resources.task["spec"]
    assert len(names) == 5
    assert spec["init"] == names[:1]
    assert spec["template"]["spec"] == {"install": names[1:3], "postInstall": names[3:4]}
    assert spec["preDelete"] == names[4:]
    assert (spec["version"], spec["generation"], spec["digest"]) == (3, 7, TASK.digest)
    assert spec["driftPolicy"] == "report"
    assert spec["ignorePaths"] == ["/spec/replicas"]
    assert spec["namespace"] == "shop"
    first = resources.steps[0]
    assert first["spec"]["job"] == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
    }
    assert first["metadata"]["labels"]["fleetbus.io/generation"] == "7"
    assert first["metadata"]["labels"]["fleetbus.io/cluster"] == "edge-1"
    assert resources.steps[3]["spec"]["wait"] == "none"


def test_a_step_keeps_its_name_across_versions_but_not_across_phases() -> None:
    ref = ObjectRef(api_version="v1", kind="ConfigMap", name="a")

    assert step_name("shop", "install", ref) == step_name("shop", "install", ref)
    assert step_name("shop", "install", ref) != step_name("shop", "init", ref)
    assert len(step_name("x" * 63, "install", ref)) <= 63


def test_an_object_listed_twice_in_a_phase_is_refused() -> None:
    doubled = Taskset(name="d", install=[Step(object=configmap("a")), Step(object=configmap("a"))])
    task = ClusterTask(
        cluster="c", taskset_name="d", version=1, generation=1, digest="x", taskset=doubled
    )

    with pytest.raises(ApplyFailed, match="appears twice"):
        task_resources(task, "ns")


def status(**fields: Any) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "spec": {"taskset": "shop"}, "status": fields}


def test_a_status_for_an_older_generation_is_not_an_answer() -> None:
    old = status(phase="Ready", observedGeneration=1, digest="d")

    assert read_task(old, generation=2, digest="d", wait_for_correction=False).verdict == "pending"


def test_ready_for_this_generation_and_digest_is_applied() -> None:
    ready = status(phase="Ready", observedGeneration=2, digest="d", objects=4)

    reading = read_task(ready, generation=2, digest="d", wait_for_correction=False)

    assert reading.verdict == "ready"
    assert reading.objects == 4


def test_a_drifted_task_is_not_applied_while_a_correction_is_awaited() -> None:
    drifted = status(phase="Ready", observedGeneration=2, digest="d", drift={"drifted": 1})

    assert read_task(drifted, generation=2, digest="d", wait_for_correction=True).verdict == (
        "pending"
    )
    assert read_task(drifted, generation=2, digest="d", wait_for_correction=False).verdict == (
        "ready"
    )


def test_a_failed_task_names_phase_object_and_reason() -> None:
    failed = status(
        phase="Failed",
        observedGeneration=2,
        digest="d",
        currentPhase="init",
        failedObject="Job/ns/seed",
        reason="BackoffLimitExceeded",
        message="Job seed-1: failed",
    )

    reading = read_task(failed, generation=2, digest="d", wait_for_correction=False)

    assert reading.verdict == "failed"
    assert (reading.phase, reading.object) == ("init", "Job/ns/seed")
    assert reading.reason == "BackoffLimitExceeded: Job seed-1: failed"


def step_with_drift(detected: int, reported: int | None) -> dict[str, Any]:
    annotations = {} if reported is None else {DRIFT_REPORTED: str(reported)}
    return {
        "metadata": {"name": "shop-1", "uid": "u-1", "annotations": annotations},
        "spec": {"task": "shop", "object": configmap("a")},
        "status": {
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "namespace": "shop"},
            "drift": {
                "detected": detected,
                "fields": ["/data/x"],
                "lastDetectedAt": "2030-01-01T00:00:05Z",
            },
        },
    }


def test_a_new_drift_detection_is_observed_once() -> None:
    observed = drift_observation(step_with_drift(2, reported=1))

    assert observed is not None
    assert observed.taskset == "shop"
    assert observed.object == "ConfigMap/shop/a"
    assert observed.fields == ["/data/x"]
    assert observed.observation == "u-1#2"
    assert observed.observed_at == datetime(2030, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert drift_observation(step_with_drift(2, reported=2)) is None
    assert drift_observation(step_with_drift(0, reported=None)) is None


def test_only_tasks_ready_for_their_spec_count_as_applied() -> None:
    tasks = [
        {
            "metadata": {"generation": 3},
            "spec": {"taskset": "a"},
            "status": {
                "phase": "Ready",
                "observedGeneration": 3,
                "generation": 9,
                "digest": "da",
                "version": 2,
                "objects": 5,
            },
        },
        {
            "metadata": {"generation": 4},
            "spec": {"taskset": "b"},
            "status": {"phase": "Ready", "observedGeneration": 3},
        },
        {
            "metadata": {"generation": 1},
            "spec": {"taskset": "c"},
            "status": {"phase": "Progressing", "observedGeneration": 1},
        },
    ]

    applied = applied_tasks(tasks)

    assert list(applied) == ["a"]
    assert (applied["a"].generation, applied["a"].digest, applied["a"].objects) == (9, "da", 5)
