"""The dashboard's time series over HTTP, from the real projector's audit index."""

from __future__ import annotations

from pathlib import Path

import msgspec

from api.auth import Role
from events.catalog import TaskFailed
from events.ids import new_event_id
from events.store import EventStore
from tests.integration.api_harness import live_api, projected
from tests.integration.test_api_events import NOW, append_each, applied, reports_store
from tests.integration.test_api_fleet import drift, fleet_history, msg_generation


def failed(cluster: str, taskset: str) -> TaskFailed:
    return TaskFailed(
        id=new_event_id(),
        occurred_at=NOW,
        actor=f"cluster:{cluster}",
        cluster=cluster,
        taskset=taskset,
        taskset_version=1,
        generation=1,
        reason="image pull backoff",
    )


async def test_convergence_waves_drift_and_event_rate_come_from_the_log(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, fleet_history())
    await append_each(
        reports,
        [
            msg_generation(applied("east", "web")),
            failed("west", "web"),
            msg_generation(applied("west", "web")),
            drift("east", "web"),
        ],
    )
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        await projected(api)
        async with api.client(Role.viewer) as client:
            rollout = (await client.get("/api/v1/charts/convergence/web")).json()
            drifts = (await client.get("/api/v1/charts/drift/east")).json()
            calm = (await client.get("/api/v1/charts/drift/west")).json()
            rate = (await client.get("/api/v1/charts/event-rate", params={"minutes": 5})).json()
            unknown = await client.get("/api/v1/charts/convergence/nothing")
            unknown_cluster = await client.get("/api/v1/charts/drift/nowhere")
            bad = await client.get("/api/v1/charts/event-rate", params={"minutes": 0})

    assert [(p["applied"], p["failed"]) for p in rollout["points"]] == [(1, 0), (1, 1), (2, 0)]
    assert [(w["wave"], w["total_waves"]) for w in rollout["waves"]] == [(1, 2)]
    assert [p["type"] for p in drifts["points"]] == ["DriftDetected"]
    assert drifts["points"][0]["taskset"] == "web"
    assert calm["points"] == []
    assert rate["bucket_seconds"] == 60
    assert len(rate["buckets"]) in (5, 6)
    assert sum(b["events"] for b in rate["buckets"]) == len(fleet_history())
    assert sum(b["reports"] for b in rate["buckets"]) == 4
    assert unknown.status_code == 404
    assert "never been published" in unknown.json()["detail"]
    assert unknown_cluster.status_code == 404
    assert bad.status_code == 400
    msgspec.json.encode(rate)
