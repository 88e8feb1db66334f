"""Blueprints through the hub: publish over HTTP, the real scheduler on the real nats-server
places them in dependency order, the projector shows each cluster's sync status.

Reports are appended as an edge would send them, so the order of the log can be asserted:
a dependent is scheduled only after its dependency was reported applied (Ready) on that
cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.auth import Role
from events.catalog import ClusterTaskHeld, ClusterTaskScheduled, TaskApplied
from events.store import EventStore
from tests.eventually import eventually
from tests.integration.api_harness import live_api, projected
from tests.integration.scheduler_harness import desired, reports_store, running_scheduler
from tests.integration.test_api_cli import as_local_hub, cli
from tests.integration.test_api_tasksets import CONFIGMAP, publish
from tests.scheduler_fixtures import (
    applied,
    config_map,
    make_taskset,
    published,
    registered,
    relabelled,
)

STACK: dict[str, Any] = {
    "name": "prod",
    "selector": "env=prod",
    "entries": [
        {"taskset": "crds"},
        {"taskset": "ingress", "dependsOn": ["crds"]},
        {"taskset": "monitoring", "dependsOn": ["crds"]},
    ],
}


async def scheduled_for(store: EventStore, cluster: str) -> list[tuple[int, str]]:
    found = []
    async for stored in store.read(subject="fleet.evt.schedule.*"):
        event = stored.event
        if isinstance(event, ClusterTaskScheduled):
            part = event.entry(cluster)
            if part is not None and not part.removed:
                found.append((stored.seq, event.taskset))
    return found


async def test_a_blueprint_reaches_a_new_cluster_in_dependency_order_and_reports_sync(
    event_store: EventStore, tmp_path: Path
) -> None:
    for name in ("crds", "ingress", "monitoring"):
        await event_store.append([published(make_taskset(name, config_map(name)), 1)])
    reports = await reports_store(event_store)
    async with (
        live_api(event_store, tmp_path / "hub", projector=True) as api,
        api.client(Role.publisher) as client,
        running_scheduler(event_store),
    ):
        cyclic = {
            "name": "loop",
            "entries": [
                {"taskset": "crds", "dependsOn": ["ingress"]},
                {"taskset": "ingress", "dependsOn": ["crds"]},
            ],
        }
        refused = await client.post("/api/v1/blueprints", json={"blueprint": cyclic})
        assert refused.status_code == 400
        assert refused.json()["error"] == "dependsOn cycle: crds -> ingress -> crds"

        answer = await client.post("/api/v1/blueprints", json={"blueprint": STACK})
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1
        await event_store.append([registered("c1", env="prod"), registered("c2", env="dev")])

        async def crds_scheduled() -> bool:
            return await desired(event_store, "c1", "crds") is not None

        await eventually(crds_scheduled, what="crds scheduled on c1")

        async def holds() -> set[tuple[str, str]]:
            return {
                (stored.event.taskset, stored.event.hold)
                async for stored in event_store.read(subject="fleet.evt.schedule.>")
                if isinstance(stored.event, ClusterTaskHeld)
            }

        async def both_held() -> bool:
            return len(await holds()) == 2

        await eventually(both_held, what="ingress and monitoring held")
        assert await holds() == {("ingress", "Waiting"), ("monitoring", "Waiting")}
        assert await desired(event_store, "c1", "ingress") is None

        await projected(api)
        status = (await client.get("/api/v1/blueprints/prod/status")).json()
        assert [(s["cluster"], s["state"]) for s in status] == [("c1", "updating")]

        ready = await reports.append([applied("c1", "crds", 1, 1)])

        async def dependents_scheduled() -> bool:
            return (
                await desired(event_store, "c1", "ingress") is not None
                and await desired(event_store, "c1", "monitoring") is not None
            )

        await eventually(dependents_scheduled, what="ingress and monitoring scheduled on c1")
        order = await scheduled_for(event_store, "c1")
        assert [name for _, name in order] == ["crds", "ingress", "monitoring"]
        report_times = [
            stored.stored_at
            async for stored in reports.read(from_seq=ready.sequences[0])
            if isinstance(stored.event, TaskApplied)
        ]
        report_time = report_times[0]
        later = [
            stored.stored_at
            async for stored in event_store.read(subject="fleet.evt.schedule.ingress")
            if isinstance(stored.event, ClusterTaskScheduled) and stored.event.entry("c1")
        ]
        assert later[0] >= report_time

        await reports.append([applied("c1", "ingress", 1, 1)])
        await reports.append([applied("c1", "monitoring", 1, 1)])
        await event_store.append([relabelled("c2", env="prod")])

        async def c2_joined() -> bool:
            return await desired(event_store, "c2", "crds") is not None

        await eventually(c2_joined, what="relabelled c2 gets crds")
        await projected(api)
        status = (await client.get("/api/v1/blueprints/prod/status")).json()
        assert {s["cluster"]: s["state"] for s in status} == {"c1": "in_sync", "c2": "updating"}
        behind = (await client.get("/api/v1/blueprints/prod/status", params={"behind": 1})).json()
        assert [s["cluster"] for s in behind] == ["c2"]
        assert behind[0]["entry"] == "crds"

        await event_store.append([relabelled("c2", env="dev")])

        async def c2_left() -> bool:
            task = await desired(event_store, "c2", "crds")
            return task is not None and task.removed

        await eventually(c2_left, what="relabelled c2 leaves the blueprint")


async def test_pinning_holds_a_cluster_on_an_old_version_and_status_says_out_of_date(
    event_store: EventStore, tmp_path: Path
) -> None:
    await event_store.append([published(make_taskset("crds", config_map("crds")), 1)])
    await event_store.append([published(make_taskset("crds", config_map("crds", {"v": "2"})), 2)])
    await event_store.append([registered("c1", env="prod"), registered("c2", env="prod")])
    reports = await reports_store(event_store)
    one = {"name": "base", "selector": "env=prod", "entries": [{"taskset": "crds", "version": 1}]}
    two = {"name": "base", "selector": "env=prod", "entries": [{"taskset": "crds", "version": 2}]}
    async with (
        live_api(event_store, tmp_path / "hub", projector=True) as api,
        api.client(Role.publisher) as client,
        running_scheduler(event_store),
    ):
        assert (await client.post("/api/v1/blueprints", json={"blueprint": one})).status_code == 200
        pin = await client.put("/api/v1/blueprints/base/clusters/c2", json={"pinned_version": 1})
        assert pin.status_code == 200, pin.text
        assert (await client.post("/api/v1/blueprints", json={"blueprint": two})).status_code == 200

        async def versions_settled() -> bool:
            first = await desired(event_store, "c1", "crds")
            second = await desired(event_store, "c2", "crds")
            return (
                first is not None
                and first.version == 2
                and second is not None
                and second.version == 1
            )

        await eventually(versions_settled, what="c1 on crds v2, c2 held on v1")
        one_task = await desired(event_store, "c1", "crds")
        two_task = await desired(event_store, "c2", "crds")
        assert one_task is not None
        assert two_task is not None
        await reports.append([applied("c1", "crds", 2, one_task.generation)])
        await reports.append([applied("c2", "crds", 1, two_task.generation)])
        await projected(api)
        status = (await client.get("/api/v1/blueprints/base/status")).json()
        assert {s["cluster"]: (s["version"], s["state"]) for s in status} == {
            "c1": (2, "in_sync"),
            "c2": (1, "out_of_date"),
        }
        diff = (await client.get("/api/v1/blueprints/base/diff")).json()
        assert [(c["taskset"], c["change"], c["fields"]) for c in diff["changes"]] == [
            ("crds", "changed", ["version"])
        ]
        unknown = await client.put("/api/v1/blueprints/base/clusters/ghost", json={})
        assert unknown.status_code == 404
        assert "cluster ghost is not registered" in unknown.json()["error"]


async def test_a_taskset_published_alone_with_depends_on_waits_and_a_cycle_is_refused(
    event_store: EventStore, tmp_path: Path
) -> None:
    await event_store.append([registered("c1", env="prod")])
    reports = await reports_store(event_store)
    placement = {"selector": "env=prod"}
    async with (
        live_api(event_store, tmp_path / "hub") as api,
        api.client(Role.publisher) as client,
        running_scheduler(event_store),
    ):
        app = await publish(
            client,
            CONFIGMAP,
            "app.yaml",
            name="app",
            namespace="web",
            placement=placement,
            depends_on=["base"],
        )
        assert app.status_code == 201, app.text
        base = await publish(
            client,
            CONFIGMAP.replace(b"settings", b"base"),
            "base.yaml",
            name="base",
            namespace="web",
            placement=placement,
            depends_on=["app"],
        )
        assert base.status_code == 400
        assert base.json()["error"] == "dependsOn cycle: base -> app -> base"
        base = await publish(
            client,
            CONFIGMAP.replace(b"settings", b"base"),
            "base.yaml",
            name="base",
            namespace="web",
            placement=placement,
        )
        assert base.status_code == 201, base.text

        async def base_scheduled() -> bool:
            return await desired(event_store, "c1", "base") is not None

        await eventually(base_scheduled, what="base scheduled on c1")
        assert await desired(event_store, "c1", "app") is None
        await reports.append([applied("c1", "base", 1, 1)])

        async def app_scheduled() -> bool:
            return await desired(event_store, "c1", "app") is not None

        await eventually(app_scheduled, what="app scheduled once base is Ready")


async def test_secret_entry_values_never_leave_the_hub_in_events_or_blueprint_views(
    event_store: EventStore, tmp_path: Path
) -> None:
    await event_store.append([published(make_taskset("web", helm=True), 1)])
    secret = "hunter2-do-not-show"
    stack = {
        "name": "prod",
        "entries": [{"taskset": "web", "values": {"db": {"password": secret}, "replicas": 2}}],
    }
    async with (
        live_api(event_store, tmp_path / "hub", projector=True) as api,
        api.client(Role.admin) as client,
    ):
        assert (await client.post("/api/v1/blueprints", json={"blueprint": stack})).status_code
        await projected(api)
        shown = [
            await client.get("/api/v1/events"),
            await client.get("/api/v1/blueprints"),
            await client.get("/api/v1/blueprints/prod"),
        ]
    for response in shown:
        assert response.status_code == 200, response.text
        assert secret not in response.text
    entry = shown[2].json()["entries"][0]
    assert entry["values"] == {"db": {"password": "<redacted>"}, "replicas": 2}


async def test_the_cli_publishes_shows_diffs_and_refuses_bad_files_in_one_line(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("crds", "ingress"):
        await event_store.append([published(make_taskset(name, config_map(name)), 1)])
    await event_store.append([registered("c1", env="prod")])
    first = tmp_path / "v1.yaml"
    first.write_text("name: prod\nselector: env=prod\nentries:\n  - taskset: crds\n")
    second = tmp_path / "v2.yaml"
    second.write_text(
        "name: prod\nselector: env=prod\nentries:\n  - taskset: crds\n"
        "  - taskset: ingress\n    dependsOn: [crds]\n"
    )
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(
        "name: prod\nentries:\n  - taskset: crds\n    dependsOn: [ingress]\n"
        "  - taskset: ingress\n    dependsOn: [crds]\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: prod\nentries: [\n")
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        local = as_local_hub(api, tmp_path / "local")
        assert await cli("blueprint", "publish", str(first), *local) == 0
        assert capsys.readouterr().out == "blueprint prod v1 published\n"
        assert await cli("blueprint", "publish", str(first), *local) == 0
        assert capsys.readouterr().out == "blueprint prod v1 unchanged\n"
        assert await cli("blueprint", "publish", str(second), *local) == 0
        capsys.readouterr()

        assert await cli("blueprint", "publish", str(cycle), *local) != 0
        captured = capsys.readouterr()
        said = [line for line in captured.err.splitlines() if line.startswith("fleetbus:")]
        assert said == ["fleetbus: error: dependsOn cycle: crds -> ingress -> crds"]
        assert "Traceback" not in captured.err
        assert await cli("blueprint", "publish", str(broken), *local) != 0
        captured = capsys.readouterr()
        assert f"{broken}:" in captured.err
        assert "not valid YAML" in captured.err
        assert "Traceback" not in captured.err

        assert await cli("blueprint", "diff", "prod", *local) == 0
        out = capsys.readouterr().out
        assert out.splitlines() == ["blueprint prod v1 -> v2", "  added    ingress"]
        await projected(api)
        assert await cli("blueprint", "show", "prod", "-o", "json", *local) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [e["taskset"] for e in shown["blueprint"]["entries"]] == ["crds", "ingress"]
        assert [(c["cluster"], c["state"]) for c in shown["clusters"]] == [("c1", "updating")]
        assert await cli("blueprint", "ls", *local) == 0
        assert "prod" in capsys.readouterr().out
        assert await cli("blueprint", "assign", "prod", "--cluster", "ghost", *local) != 0
        assert "cluster ghost is not registered" in capsys.readouterr().err
