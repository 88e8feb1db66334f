"""The fleet over HTTP: status matrix, cluster and taskset pages, registration with a bundle,
overrides and rollouts — against the real projector and the real services."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from access.nats_accounts import NatsAuthority
from access.pki import HubPki, cluster_of_certificate
from api.auth import Role
from events.catalog import (
    ClusterTaskScheduled,
    DriftDetected,
    Event,
    RolloutAdvanced,
    ScheduledCluster,
)
from events.ids import new_event_id
from events.inventory import ControllerReplica, ControllerStatus, EdgeStatus
from events.store import EventStore
from fleetbus.enrollment import BundleEnrollment, LogStateHistory
from tests.integration.api_harness import live_api, projected
from tests.integration.test_api_events import (
    NOW,
    append_each,
    applied,
    published,
    registered,
    reports_store,
)
from tests.integration.test_api_tasksets import CONFIGMAP, publish


def scheduled(cluster: str, taskset: str, wave: int) -> ClusterTaskScheduled:
    return ClusterTaskScheduled(
        id=new_event_id(),
        occurred_at=NOW,
        actor="scheduler",
        taskset=taskset,
        clusters=[
            ScheduledCluster(
                cluster=cluster,
                taskset_version=1,
                generation=1,
                digest="sha256:" + "ab" * 32,
                wave=wave,
            )
        ],
    )


def fleet_history() -> list[Event]:
    return [
        registered("east"),
        registered("west"),
        published("web"),
        scheduled("east", "web", 0),
        scheduled("west", "web", 1),
        RolloutAdvanced(
            id=new_event_id(),
            occurred_at=NOW,
            actor="scheduler",
            taskset="web",
            taskset_version=1,
            wave=0,
            total_waves=2,
            clusters=["east"],
        ),
    ]


def drift(cluster: str, taskset: str) -> DriftDetected:
    return DriftDetected(
        id=new_event_id(),
        occurred_at=NOW,
        actor=f"cluster:{cluster}",
        cluster=cluster,
        taskset=taskset,
        taskset_version=1,
        generation=1,
        object="ConfigMap/web/settings",
        fields=["data.colour"],
    )


async def test_the_status_matrix_shows_every_cluster_taskset_and_placement(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, fleet_history())
    east_applied = applied("east", "web")
    await append_each(reports, [msg_generation(east_applied)])
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        await projected(api)
        async with api.client(Role.viewer) as client:
            status = (await client.get("/api/v1/status")).json()
            one = (await client.get("/api/v1/status", params={"taskset": "web"})).json()
            missing = await client.get("/api/v1/status", params={"taskset": "nothing"})
    assert [c["name"] for c in status["clusters"]] == ["east", "west"]
    east, west = status["clusters"]
    assert east["connected"] is True, "it reported a moment ago"
    assert east["last_seen"] is not None
    assert west["connected"] is False, "never heard from"
    assert west["last_seen"] is None
    [web] = status["tasksets"]
    assert (web["name"], web["version"], web["format"]) == ("web", 1, "yaml")
    assert web["rollout"]["state"] == "progressing"
    assert (web["rollout"]["applied"], web["rollout"]["targets"]) == (1, 2)
    cells = {(c["cluster"], c["taskset"]): c for c in status["cells"]}
    assert cells[("east", "web")]["state"] == "applied"
    assert cells[("east", "web")]["applied_version"] == 1
    assert cells[("west", "web")]["state"] == "pending"
    assert status["positions"]["EVENTS"] == 6
    assert one["tasksets"][0]["name"] == "web"
    assert missing.status_code == 404


async def test_cluster_and_taskset_pages_show_reports_drift_and_waves(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, fleet_history())
    await append_each(reports, [msg_generation(applied("east", "web")), drift("east", "web")])
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        await projected(api)
        async with api.client(Role.viewer) as client:
            east = (await client.get("/api/v1/clusters/east")).json()
            web = (await client.get("/api/v1/tasksets/web")).json()
            listed = (await client.get("/api/v1/tasksets")).json()
            clusters = (await client.get("/api/v1/clusters")).json()
            unknown_cluster = await client.get("/api/v1/clusters/nowhere")
            unknown_taskset = await client.get("/api/v1/tasksets/nothing")
    assert east["cluster"]["name"] == "east"
    assert [cell["state"] for cell in east["cells"]] == ["drifted"]
    assert [row["type"] for row in east["drift"]] == ["DriftDetected"]
    assert east["drift"][0]["taskset"] == "web"
    assert [row["type"] for row in east["reports"]] == ["DriftDetected", "TaskApplied"]
    assert web["taskset"]["name"] == "web"
    assert [v["version"] for v in web["versions"]] == [1]
    assert web["published_by"] == "user:test"
    assert [(w["wave"], [c["cluster"] for c in w["clusters"]]) for w in web["waves"]] == [
        (0, ["east"]),
        (1, ["west"]),
    ]
    assert [t["name"] for t in listed] == ["web"]
    assert [c["name"] for c in clusters] == ["east", "west"]
    assert unknown_cluster.status_code == 404
    assert unknown_taskset.status_code == 404


async def test_reads_before_the_projector_has_written_are_503_not_500(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        response = await client.get("/api/v1/status")
        metrics = await client.get("/metrics")
    assert response.status_code == 503
    assert "no projection" in response.json()["error"]
    assert metrics.status_code == 200


async def test_fleet_levels_are_exported_as_metrics(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, fleet_history())
    await append_each(reports, [msg_generation(applied("east", "web"))])
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        await projected(api)
        async with api.client(Role.viewer) as client:
            text = (await client.get("/metrics")).text
    assert "fleetbus_clusters_registered 2.0" in text
    assert 'fleetbus_rollout_progress_ratio{taskset="web"} 0.5' in text
    assert 'fleetbus_rollout_clusters{state="pending",taskset="web"} 1.0' in text
    assert 'fleetbus_rollout_clusters{state="applied",taskset="web"} 1.0' in text


async def test_registering_a_cluster_answers_with_its_edge_bundle(
    event_store: EventStore, tmp_path: Path
) -> None:
    pki = HubPki(tmp_path / "pki")
    pki.ensure_ca(datetime.now(UTC))
    async with live_api(event_store, tmp_path / "hub") as api:
        api.hub.enrollment = BundleEnrollment(
            pki=pki,
            hub_urls=["tls://hub.example:443"],
            authority=NatsAuthority.open(tmp_path),
        )
        async with api.client(Role.admin) as admin:
            response = await admin.post(
                "/api/v1/clusters", json={"name": "edge-1", "labels": {"env": "prod"}}
            )
            again = await admin.post("/api/v1/clusters", json={"name": "edge-1"})
            bad = await admin.post("/api/v1/clusters", json={"name": "Edge_1"})
            relabelled = await admin.patch(
                "/api/v1/clusters/edge-1/labels", json={"set": {"tier": "gold"}, "remove": ["env"]}
            )
            removed = await admin.delete("/api/v1/clusters/edge-1")
            removed_again = await admin.delete("/api/v1/clusters/edge-1")
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert 'filename="edge-1-bundle.tar.gz"' in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content)) as bundle:
        names = set(bundle.getnames())
        settings = json.loads(bundle.extractfile("edge-1/edge.json").read())  # type: ignore[union-attr]
        cert = bundle.extractfile("edge-1/cluster.crt").read()  # type: ignore[union-attr]
    assert {"edge-1/ca.crt", "edge-1/cluster.key", "edge-1/leaf.conf"} <= names
    assert settings["cluster"] == "edge-1"
    assert settings["hub_urls"] == ["tls://hub.example:443"]
    assert cluster_of_certificate(cert) == "edge-1"
    stored = [s.event async for s in event_store.read()]
    assert stored[0].certificate_fingerprint  # type: ignore[attr-defined]
    assert again.status_code == 409
    assert bad.status_code == 400
    assert relabelled.json()["labels"] == {"tier": "gold"}
    assert removed.status_code == 200
    assert removed_again.status_code == 404


async def test_a_hub_without_a_leaf_listener_cannot_enroll_clusters(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.admin) as admin:
        response = await admin.post("/api/v1/clusters", json={"name": "edge-1"})
    assert response.status_code == 503
    assert "cannot issue cluster certificates" in response.json()["error"]
    assert [s async for s in event_store.read()] == [], "nothing registered"


TARGET = {"kind": "ConfigMap", "namespace": "web", "name": "settings"}
PATCH = {"target": TARGET, "mergePatch": {"data": {"colour": "green"}}}


async def test_overrides_are_set_listed_previewed_and_removed(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east")])
    async with live_api(event_store, tmp_path / "hub") as api:
        async with api.client(Role.publisher) as client:
            await publish(client, CONFIGMAP, "settings.yaml", name="settings", namespace="web")
            set_ = await client.put(
                "/api/v1/tasksets/settings/overrides/green",
                json={"cluster": "east", "patches": [PATCH]},
            )
            listed = (await client.get("/api/v1/tasksets/settings/overrides")).json()
            preview = await client.get(
                "/api/v1/tasksets/settings/overrides-preview", params={"cluster": "east"}
            )
            wrong_target = await client.put(
                "/api/v1/tasksets/settings/overrides/bad",
                json={
                    "cluster": "east",
                    "patches": [{**PATCH, "target": {**TARGET, "name": "x"}}],
                },
            )
            both = await client.put(
                "/api/v1/tasksets/settings/overrides/both",
                json={"cluster": "east", "selector": "env=prod", "patches": [PATCH]},
            )
            unknown = await client.put(
                "/api/v1/tasksets/nothing/overrides/green",
                json={"cluster": "east", "patches": [PATCH]},
            )
            removed = await client.delete("/api/v1/tasksets/settings/overrides/green")
            removed_again = await client.delete("/api/v1/tasksets/settings/overrides/green")
        async with api.client(Role.viewer) as viewer:
            forbidden = await viewer.put(
                "/api/v1/tasksets/settings/overrides/green",
                json={"cluster": "east", "patches": [PATCH]},
            )
    assert set_.status_code == 200, set_.text
    assert set_.json()["set_by"] == "user:test-publisher"
    assert [o["name"] for o in listed] == ["green"]
    assert preview.status_code == 200, preview.text
    assert preview.json()["overrides"] == ["green"]
    assert "-  colour: blue" in preview.json()["diff"]
    assert "+  colour: green" in preview.json()["diff"]
    assert wrong_target.status_code == 400
    assert "does not have" in wrong_target.json()["error"]
    assert both.status_code == 400
    assert unknown.status_code == 404
    assert removed.status_code == 200
    assert removed_again.status_code == 404
    assert forbidden.status_code == 403


async def test_resuming_a_rollout_that_is_not_halted_is_a_conflict(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [published("web")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await c.post("/api/v1/tasksets/web/rollout/resume")
    assert response.status_code == 409
    assert "not halted" in response.json()["error"]


def msg_generation(event: Event) -> Event:
    """A report for generation 1, the generation `scheduled` writes."""
    return msgspec.structs.replace(event, generation=1)


async def test_the_state_of_a_cluster_can_be_asked_for_any_moment(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east")])
    async with live_api(event_store, tmp_path / "hub") as api:
        api.hub.history = LogStateHistory(event_store)
        async with api.client(Role.viewer) as client:
            now = await client.get("/api/v1/clusters/east/state")
            before = await client.get(
                "/api/v1/clusters/east/state", params={"at": "2000-01-01T00:00:00Z"}
            )
            bad = await client.get("/api/v1/clusters/Not_A_Name/state")
    assert now.status_code == 200, now.text
    assert (now.json()["cluster"], now.json()["registered"]) == ("east", True)
    assert now.json()["tasks"] == []
    assert before.json()["registered"] is False
    assert before.json()["asOf"].startswith("2000-01-01")
    assert bad.status_code == 400


async def test_state_needs_a_hub_that_can_replay_it(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        response = await client.get("/api/v1/clusters/east/state")
    assert response.status_code == 503


async def test_status_answers_carry_an_etag_and_change_as_soon_as_the_projection_does(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, fleet_history())
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        await projected(api)
        async with api.client(Role.viewer) as client:
            first = await client.get("/api/v1/status")
            etag = first.headers["etag"]
            builds = api.hub.reads.builds
            again = await client.get("/api/v1/status")
            unchanged = await client.get("/api/v1/status", headers={"If-None-Match": etag})
            assert api.hub.reads.builds == builds, "a current answer was built again"
            await append_each(event_store, [registered("north")])
            await projected(api)
            changed = await client.get("/api/v1/status", headers={"If-None-Match": etag})
            clusters = await client.get("/api/v1/clusters")
            clusters_unchanged = await client.get(
                "/api/v1/clusters", headers={"If-None-Match": clusters.headers["etag"]}
            )
        async with api.client() as anonymous:
            unauthenticated = await anonymous.get("/api/v1/status", headers={"If-None-Match": etag})
    assert first.status_code == 200
    assert again.content == first.content
    assert again.headers["etag"] == etag
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    assert changed.status_code == 200, "the new cluster is in the read models: a new answer"
    assert changed.headers["etag"] != etag
    assert [c["name"] for c in changed.json()["clusters"]] == ["east", "north", "west"]
    assert [c["name"] for c in clusters.json()] == ["east", "north", "west"]
    assert clusters_unchanged.status_code == 304
    assert unauthenticated.status_code == 401, "a cached answer is no way around the token"


async def test_clusters_show_their_connectors_version_and_readiness_from_inventory_digests(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, fleet_history())
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        await projected(api)
        controller = ControllerStatus(
            ready=False,
            reason="controller c-1: watches not synced yet: steps",
            version="9.8.7",
            leader="c-1",
            watches_synced=False,
            last_error="watch of steps ended: forbidden",
            last_error_at=datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
            replicas=[ControllerReplica(name="c-1", role="single", watches={"steps": False})],
        )
        statuses = {
            "east": EdgeStatus(
                version="9.8.7",
                ready=False,
                reason="not connected to the hub: x",
                controller=controller,
            )
        }
        api.hub.edge_status = lambda: statuses
        async with api.client(Role.viewer) as client:
            clusters = (await client.get("/api/v1/clusters")).json()
            status = (await client.get("/api/v1/status")).json()
            detail = (await client.get("/api/v1/clusters/east")).json()
            metrics = (await client.get("/metrics")).text
    assert clusters[0]["controller"] == {
        "ready": False,
        "reason": "controller c-1: watches not synced yet: steps",
        "version": "9.8.7",
        "leader": "c-1",
        "watches_synced": False,
        "last_error": "watch of steps ended: forbidden",
        "last_error_at": "2026-05-01T12:00:00Z",
        "replicas": [
            {
                "name": "c-1",
                "role": "single",
                "ready": False,
                "reason": "",
                "version": "",
                "watches": {"steps": False},
                "last_error": "",
                "last_error_at": None,
                "heard_at": None,
                "stale": False,
                "stopped": False,
            }
        ],
    }
    assert clusters[1]["controller"] is None
    assert detail["cluster"]["controller"]["reason"] == controller.reason
    assert "fleetbus_clusters_edge_not_ready 1.0" in metrics
    assert "fleetbus_clusters_controller_not_ready 1.0" in metrics
    east, west = clusters
    assert (east["edge_version"], east["edge_ready"]) == ("9.8.7", False)
    assert east["edge_health"] == "not connected to the hub: x"
    assert (west["edge_version"], west["edge_ready"], west["edge_health"]) == ("", None, "")
    assert status["clusters"][0]["edge_version"] == "9.8.7"
