"""Release semantics through the whole loop on the acting test cluster.

Hub (`fleetbus up`) → TLS leaf → edge connector → cluster controller on `kube_cluster`: two
tasksets claiming one ConfigMap (the second is reported failed, naming the first), a rollback
that brings version 1's objects back, and `cluster rm --drain` leaving the cluster empty.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_hub_process import hub
from tests.e2e.test_kube_cluster_loop import CLUSTER, Loop, loop
from tests.e2e.test_kube_loop import poll, status_rows
from tests.kube_envtest import unique_namespace_name

__all__ = ["hub", "loop"]

pytestmark = pytest.mark.kube


def configmaps(root: Path, name: str, **objects: str) -> Path:
    source = root / name
    source.mkdir()
    for key, value in objects.items():
        object_name = key.replace("_", "-")
        (source / f"{object_name}.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {object_name}\n"
            f"data:\n  value: '{value}'\n"
        )
    return source


def publish(loop: Loop, source: Path, name: str, namespace: str) -> None:
    done = loop.hub.fleetbus(
        "publish", str(source), "--name", name, "--namespace", namespace, "--cluster", CLUSTER
    )
    assert done.returncode == 0, done.stderr


async def applied_version(loop: Loop, taskset: str, version: int) -> None:
    await poll(
        lambda: status_rows(loop.hub, taskset),
        lambda rows: any(
            r["cluster"] == CLUSTER and r["state"] == "applied" and r["applied_version"] == version
            for r in rows
        ),
        f"{taskset} v{version} applied on {CLUSTER}",
    )


async def configmap(loop: Loop, namespace: str, name: str) -> Any:
    return await loop.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")


async def test_a_second_taskset_claiming_a_configmap_is_reported_failed_naming_the_first(
    loop: Loop,
) -> None:
    app = unique_namespace_name("claims")
    await loop.kubectl("create", "namespace", app)
    publish(loop, configmaps(loop.tmp_path, "first", shared="first"), "first", app)
    await loop.wait_state("first", "applied")

    publish(loop, configmaps(loop.tmp_path, "second", shared="second"), "second", app)

    failed = [e for e in await loop.events("TaskFailed") if e["taskset"] == "second"]
    assert failed, "no TaskFailed for the second taskset"
    assert f"ConfigMap/{app}/shared is owned by taskset first" in failed[0]["reason"]
    live = await configmap(loop, app, "shared")
    assert live["data"] == {"value": "first"}
    assert live["metadata"]["labels"]["fleetbus.io/task"] == "first"


async def test_rollback_restores_version_1_and_drain_leaves_the_cluster_empty(
    loop: Loop,
) -> None:
    app = unique_namespace_name("rollback")
    await loop.kubectl("create", "namespace", app)
    publish(loop, configmaps(loop.tmp_path, "v1", app="one", only_v1="x"), "app", app)
    await applied_version(loop, "app", 1)
    publish(loop, configmaps(loop.tmp_path, "v2", app="two", only_v2="y"), "app", app)
    await applied_version(loop, "app", 2)
    assert await configmap(loop, app, "only-v1") is None

    rolled = await asyncio.to_thread(loop.hub.fleetbus, "rollback", "app", "--to-version", "1")
    assert rolled.returncode == 0, rolled.stderr
    assert "published as v3" in rolled.stdout

    await applied_version(loop, "app", 3)
    assert (await configmap(loop, app, "app"))["data"] == {"value": "one"}
    assert await configmap(loop, app, "only-v1") is not None
    assert await configmap(loop, app, "only-v2") is None
    listed = await asyncio.to_thread(loop.hub.fleetbus, "events", "--taskset", "app", "-o", "json")
    published = [
        row["event"]
        for row in json.loads(listed.stdout)
        if row["event"]["type"] == "TasksetPublished"
    ]
    assert [e["taskset_version"] for e in published] == [1, 2, 3]
    assert published[2]["rollback_of"] == 1
    assert published[2]["causation_id"] == published[0]["id"]

    publish(loop, configmaps(loop.tmp_path, "other", other="z"), "other", app)
    await loop.wait_state("other", "applied")

    drained = await asyncio.to_thread(
        loop.hub.fleetbus, "cluster", "rm", CLUSTER, "--drain", "--drain-timeout", "50"
    )

    assert drained.returncode == 0, drained.stderr
    assert f"cluster {CLUSTER} is empty" in drained.stdout
    assert "deregistered" in drained.stdout
    for name in ("app", "only-v1", "other"):
        assert await configmap(loop, app, name) is None, name
    assert await loop.controller.task("app") is None
    assert await loop.controller.task("other") is None
