"""`/metrics`: what the hub counts from the log, and the Grafana dashboard drawn over it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from api.auth import Role
from events.catalog import DriftCorrected, DriftDetected, Event, TaskFailed
from events.ids import new_event_id
from events.store import EventStore
from tests.eventually import eventually_value
from tests.exported_metrics import hub_metrics
from tests.integration.api_harness import live_api
from tests.integration.test_api_events import (
    NOW,
    append_each,
    applied,
    published,
    registered,
    reports_store,
)

GRAFANA = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "fleetbus.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_until(client: httpx.AsyncClient, condition: Callable[[Samples], bool]) -> Samples:
    """Scrape until `condition` holds (the observer follows the log asynchronously)."""
    return await eventually_value(
        lambda: scrape(client), "the metrics", condition, within=60, interval=0.1
    )


def registrations(samples: Samples) -> float:
    return value(
        samples, "fleetbus_events_appended_total", stream="EVENTS", type="ClusterRegistered"
    )


async def following(
    client: httpx.AsyncClient, events: EventStore, reports: EventStore
) -> tuple[int, Samples]:
    """Wait until the hub's observer follows both streams: it starts from where each stream is
    when it first reads it, so a probe appended to each (a registration, a failure of taskset
    "probe") is counted once it follows. Returns the probes appended and the metrics then."""
    probes = 0

    async def probed() -> Samples:
        nonlocal probes
        probes += 1
        failure = TaskFailed(
            id=new_event_id(), occurred_at=NOW, actor="cluster:p", cluster="p", taskset="probe"
        )
        await append_each(events, [registered(f"probe-{probes}")])
        await append_each(reports, [failure])
        return await scrape(client)

    samples = await eventually_value(
        probed,
        "the metrics observer following both streams",
        lambda s: (
            registrations(s) > 0 and value(s, "fleetbus_tasks_failed_total", taskset="probe") > 0
        ),
        within=60,
        interval=0.2,
    )
    return probes, samples


async def test_events_and_reports_are_counted_as_they_arrive(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, [registered("before-start")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        probes, base = await following(client, event_store, reports)
        assert registrations(base) <= probes, "nothing appended before the hub started counts"
        publication = published("web")
        await append_each(event_store, [registered("east"), publication])
        first_apply = applied("east", "web")
        late = msg_replace(first_apply, occurred_at=publication.occurred_at + timedelta(seconds=42))
        drift = DriftDetected(
            id=new_event_id(),
            occurred_at=NOW,
            actor="cluster:east",
            cluster="east",
            taskset="web",
            object="Deployment/web/web",
        )
        corrected = DriftCorrected(
            id=new_event_id(),
            occurred_at=NOW,
            actor="cluster:east",
            cluster="east",
            taskset="web",
            object="Deployment/web/web",
        )
        failed = TaskFailed(
            id=new_event_id(), occurred_at=NOW, actor="cluster:west", cluster="west", taskset="web"
        )
        again = msg_replace(late, id=new_event_id())
        await append_each(reports, [late, drift, corrected, failed, again])
        samples = await scrape_until(
            client,
            lambda s: (
                value(s, "fleetbus_tasks_failed_total", taskset="web") == 1
                and value(s, "fleetbus_tasks_applied_total", taskset="web") == 2
            ),
        )
    assert registrations(samples) == registrations(base) + 1, "east's registration"
    assert (
        value(samples, "fleetbus_events_appended_total", stream="EVENTS", type="TasksetPublished")
        == 1
    )
    assert (
        value(samples, "fleetbus_events_appended_total", stream="REPORTS", type="TaskApplied") == 2
    )
    assert value(samples, "fleetbus_drift_detected_total", taskset="web") == 1
    assert value(samples, "fleetbus_drift_corrected_total", taskset="web") == 1
    assert value(samples, "fleetbus_apply_duration_seconds_count") == 2
    assert value(samples, "fleetbus_apply_duration_seconds_sum") == 3.0
    assert value(samples, "fleetbus_publish_to_applied_seconds_count") == 1, "first apply only"
    assert value(samples, "fleetbus_publish_to_applied_seconds_sum") == 42.0
    assert value(samples, "fleetbus_stream_last_sequence", stream="EVENTS") == 3 + probes
    assert value(samples, "fleetbus_stream_last_sequence", stream="REPORTS") == 5 + probes


async def test_durable_consumer_lag_is_reported(event_store: EventStore, tmp_path: Path) -> None:
    await event_store.api_request(
        "CONSUMER.CREATE.EVENTS.projector",
        {
            "stream_name": "EVENTS",
            "config": {"durable_name": "projector", "ack_policy": "explicit"},
        },
    )
    await append_each(event_store, [registered(f"c{i}") for i in range(4)])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        samples = await scrape(client)
    assert value(samples, "fleetbus_consumer_lag", stream="EVENTS", consumer="projector") == 4
    readers = [key for key in samples if key[0] == "fleetbus_consumer_lag"]
    assert len(readers) == 1, f"ephemeral readers are not lag: {readers}"


async def test_http_requests_are_counted_by_route_template(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.admin) as client:
        await client.delete("/api/v1/tokens/nobody")
        samples = await scrape(client)
    assert (
        value(
            samples,
            "fleetbus_http_requests_total",
            method="DELETE",
            route="/api/v1/tokens/{token}",
            status="404",
        )
        == 1
    )


def test_every_metric_the_grafana_dashboard_uses_is_exposed_by_the_hub() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    exposed = hub_metrics()
    used: set[str] = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used.update(re.findall(r"\bfleetbus_[a-z_]+", target["expr"]))
    assert used, "the dashboard queries fleetbus metrics"
    assert not used - exposed, f"unknown metrics: {sorted(used - exposed)}"
    assert {"fleetbus_publish_to_applied_seconds_bucket", "fleetbus_consumer_lag"} <= used


E = TypeVar("E", bound=Event)


def msg_replace(event: E, **changes: object) -> E:
    return msgspec.structs.replace(event, **changes)


async def test_refused_requests_are_counted_with_their_status(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api:
        async with api.client() as anonymous:
            await anonymous.get("/api/v1/whoami")
        async with api.client(Role.viewer) as viewer:
            await viewer.get("/api/v1/tokens")
            samples = await scrape(viewer)
    assert (
        value(
            samples,
            "fleetbus_http_requests_total",
            method="GET",
            route="/api/v1/whoami",
            status="401",
        )
        == 1
    )
    assert (
        value(
            samples,
            "fleetbus_http_requests_total",
            method="GET",
            route="/api/v1/tokens",
            status="403",
        )
        == 1
    )
