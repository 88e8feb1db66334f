"""`/api/v1/events`: replay with filters and paging, and the live stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from api.auth import Role
from events.catalog import (
    ClusterRegistered,
    Event,
    OverrideSet,
    TaskApplied,
    TasksetPublished,
)
from events.ids import new_event_id
from events.store import EventStore
from events.streams import REPORTS_STREAM, reports_stream
from taskset.codec import encode_taskset
from taskset.model import SourceInfo, Step, Taskset
from tests.eventually import eventually_value
from tests.integration.api_harness import live_api

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def registered(cluster: str) -> ClusterRegistered:
    return ClusterRegistered(
        id=new_event_id(), occurred_at=NOW, actor="user:test", cluster=cluster, labels={}
    )


def published(taskset: str, version: int = 1) -> TasksetPublished:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    body = encode_taskset(
        Taskset(
            name=taskset,
            install=[Step(object={**config, "data": {"k": "SECRET-BODY-BYTES"}})],
            source=SourceInfo(format="yaml", digest="sha256:" + "cd" * 32),
        )
    )
    return TasksetPublished(
        id=new_event_id(),
        occurred_at=NOW,
        actor="user:test",
        taskset=taskset,
        taskset_version=version,
        digest="sha256:" + "ab" * 32,
        source_digest="sha256:" + "cd" * 32,
        format="yaml",
        body=body,
        body_size=len(body),
        values={"db": {"password": "hunter2", "host": "db.local"}},
    )


def override(taskset: str, cluster: str) -> OverrideSet:
    return OverrideSet(
        id=new_event_id(),
        occurred_at=NOW,
        actor="user:test",
        taskset=taskset,
        name="tune",
        cluster=cluster,
        values={"apiToken": "s3cr3t", "replicas": 3},
        patches=[
            {
                "target": {"kind": "Secret", "namespace": "web", "name": "creds"},
                "mergePatch": {"stringData": {"key": "hunter2"}},
            }
        ],
    )


def applied(cluster: str, taskset: str) -> TaskApplied:
    return TaskApplied(
        id=new_event_id(),
        occurred_at=NOW,
        actor=f"cluster:{cluster}",
        cluster=cluster,
        taskset=taskset,
        taskset_version=1,
        objects=4,
        duration_s=1.5,
    )


async def append_each(store: EventStore, events: list[Event]) -> None:
    for event in events:
        await store.append([event])


async def reports_store(event_store: EventStore) -> EventStore:
    """REPORTS normally sources edge outboxes; here it captures report subjects directly."""
    await event_store.ensure_stream({**reports_stream(), "subjects": ["fleet.report.>"]})
    return event_store.on_stream(REPORTS_STREAM)


async def test_replay_returns_events_in_order_with_secrets_left_out(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east"), published("web"), override("web", "east")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        response = await client.get("/api/v1/events")
    assert response.status_code == 200
    page = response.json()
    assert [e["type"] for e in page["events"]] == [
        "ClusterRegistered",
        "TasksetPublished",
        "OverrideSet",
    ]
    assert [e["seq"] for e in page["events"]] == [1, 2, 3]
    assert page["next_from_seq"] is None
    assert page["last_seq"] == 3
    text = response.text
    for secret in ("hunter2", "s3cr3t", "SECRET-BODY", "U0VDUkVU"):
        assert secret not in text, f"{secret} leaked"
    snapshot = page["events"][1]
    assert snapshot["summary"].startswith("web v1 (yaml, sha256:")
    assert snapshot["event"]["values"]["db"] == {"password": "<redacted>", "host": "db.local"}
    assert page["events"][2]["event"]["values"] == {"apiToken": "<redacted>", "replicas": 3}
    assert page["events"][2]["event"]["patches"][0]["patch"] == "<redacted>"


async def test_replay_pages_by_sequence_without_skipping_or_repeating(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered(f"c{i}") for i in range(7)])
    seen: list[int] = []
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        params: dict[str, Any] = {"limit": 3}
        pages = 0
        while True:
            page = (await client.get("/api/v1/events", params=params)).json()
            pages += 1
            seen.extend(event["seq"] for event in page["events"])
            if page["next_from_seq"] is None:
                break
            params["from_seq"] = page["next_from_seq"]
    assert seen == list(range(1, 8))
    assert pages == 3


async def test_replay_filters_by_cluster_taskset_and_time(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east"), registered("west"), published("web")])
    await append_each(event_store, [override("web", "east"), override("api", "west")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        east = (await client.get("/api/v1/events", params={"cluster": "east"})).json()
        web = (await client.get("/api/v1/events", params={"taskset": "web"})).json()
        both = (
            await client.get("/api/v1/events", params={"taskset": "web", "cluster": "east"})
        ).json()
        first_page = (await client.get("/api/v1/events", params={"limit": 1})).json()
        stored_at = datetime.fromisoformat(first_page["events"][0]["stored_at"])
        future = (
            await client.get("/api/v1/events", params={"since": "2999-01-01T00:00:00Z"})
        ).json()
        past = (await client.get("/api/v1/events", params={"until": "2000-01-01T00:00:00Z"})).json()
        everything = (
            await client.get("/api/v1/events", params={"since": stored_at.isoformat()})
        ).json()
    assert [e["seq"] for e in east["events"]] == [1, 4]
    assert [e["seq"] for e in web["events"]] == [3, 4]
    assert [e["seq"] for e in both["events"]] == [4]
    assert future["events"] == []
    assert past["events"] == []
    assert len(everything["events"]) == 5


async def test_replay_of_reports_reads_what_clusters_said(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(reports, [applied("east", "web"), applied("west", "web")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        page = (
            await client.get("/api/v1/events", params={"stream": "reports", "cluster": "west"})
        ).json()
    assert [e["type"] for e in page["events"]] == ["TaskApplied"]
    assert page["events"][0]["summary"] == "west: web applied v1 (4 objects, 1.5s)"
    assert page["stream"] == "reports"


async def test_bad_replay_parameters_are_refused_with_a_clear_400(
    event_store: EventStore, tmp_path: Path
) -> None:
    bad = [
        {"from_seq": "0"},
        {"limit": "5000"},
        {"cluster": "Not_A_Name"},
        {"since": "yesterday"},
        {"stream": "nope"},
        {"since": "2026-05-02T00:00:00Z", "until": "2026-05-01T00:00:00Z"},
    ]
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        for params in bad:
            response = await client.get("/api/v1/events", params=params)
            assert response.status_code == 400, (params, response.text)
            body = response.json()
            assert {"type", "title", "status", "detail", "instance", "error"} <= set(body)
            assert body["status"] == 400
            assert body["error"]
            assert body["detail"] == body["error"]


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parsed SSE messages (comments skipped)."""
    message: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in message:
                yield message
            message = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            message[field] = value


async def next_event(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(stream), timeout=15)


async def test_the_live_stream_sends_new_events_and_resumes_from_its_cursor(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, [registered("old")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        async with client.stream("GET", "/api/v1/events/stream") as response:
            assert response.status_code == 200
            stream = sse_events(response)
            await append_each(event_store, [registered("east")])
            first = await next_event(stream)
            await append_each(reports, [applied("east", "web")])
            second = await next_event(stream)
        assert json.loads(first["data"])["event"]["cluster"] == "east", "only new events"
        assert first["id"] == "2-0"
        assert json.loads(second["data"])["type"] == "TaskApplied"
        assert second["id"] == "2-1"

        await append_each(event_store, [registered("missed")])
        await append_each(reports, [applied("missed", "web")])
        headers = {"Last-Event-ID": first["id"]}
        async with client.stream("GET", "/api/v1/events/stream", headers=headers) as response:
            stream = sse_events(response)
            resumed = [await next_event(stream) for _ in range(3)]
    summaries = sorted(json.loads(m["data"])["summary"] for m in resumed)
    assert summaries == [
        "east: web applied v1 (4 objects, 1.5s)",
        "missed registered (no labels)",
        "missed: web applied v1 (4 objects, 1.5s)",
    ]
    assert resumed[-1]["id"] == "3-2"


async def test_the_live_stream_filters_and_replays_from_a_sequence(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east"), registered("west"), registered("east2")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        params = {"from_seq": "1", "cluster": "west", "streams": "events"}
        async with client.stream("GET", "/api/v1/events/stream", params=params) as response:
            stream = sse_events(response)
            replayed = await next_event(stream)
            await append_each(event_store, [registered("east"), override("web", "west")])
            live = await next_event(stream)
    assert json.loads(replayed["data"])["seq"] == 2
    assert json.loads(live["data"])["type"] == "OverrideSet"
    assert live["id"] == "5-0"


async def test_the_live_stream_ends_when_the_hub_shuts_down(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with (
        live_api(event_store, tmp_path / "hub") as api,
        api.client(Role.viewer) as client,
        client.stream("GET", "/api/v1/events/stream") as response,
    ):

        async def read_until_the_end() -> list[str]:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                api.hub.shutdown.set()
            return lines

        lines = await asyncio.wait_for(read_until_the_end(), timeout=60)
    assert lines[0] == ": fleetbus live events"


async def test_a_malformed_last_event_id_is_refused(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        response = await client.get("/api/v1/events/stream", headers={"Last-Event-ID": "yesterday"})
    assert response.status_code == 400
    assert "Last-Event-ID" in response.json()["error"]


async def test_times_before_the_epoch_or_without_a_zone_are_read_sensibly(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        ancient = await client.get("/api/v1/events", params={"since": "0112-08-11T13:19:00Z"})
        naive = await client.get("/api/v1/events", params={"since": "2000-01-01T00:00:00"})
        naive_until = await client.get("/api/v1/events", params={"until": "2000-01-01T00:00:00"})
    assert [e["seq"] for e in ancient.json()["events"]] == [1]
    assert [e["seq"] for e in naive.json()["events"]] == [1]
    assert naive_until.json()["events"] == []


async def test_a_page_is_read_once_per_state_of_the_stream(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east"), registered("west")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.viewer) as client:
        first = await client.get("/api/v1/events", params={"limit": 10})
        builds = api.hub.reads.builds
        again = await client.get("/api/v1/events", params={"limit": 10})
        unchanged = await client.get(
            "/api/v1/events", params={"limit": 10}, headers={"If-None-Match": first.headers["etag"]}
        )
        assert api.hub.reads.builds == builds, "the same page of the same log was read again"
        await append_each(event_store, [registered("north")])
        grown = await client.get(
            "/api/v1/events", params={"limit": 10}, headers={"If-None-Match": first.headers["etag"]}
        )
        filtered = await client.get("/api/v1/events", params={"limit": 10, "cluster": "west"})
    assert again.content == first.content
    assert unchanged.status_code == 304
    assert grown.status_code == 200
    assert [e["event"]["cluster"] for e in grown.json()["events"]] == ["east", "west", "north"]
    assert grown.json()["last_seq"] == 3
    assert [e["event"]["cluster"] for e in filtered.json()["events"]] == ["west"]


def labelled(cluster: str, env: str) -> ClusterRegistered:
    return ClusterRegistered(
        id=new_event_id(), occurred_at=NOW, actor="user:test", cluster=cluster, labels={"env": env}
    )


async def test_replay_and_the_live_stream_filter_by_a_label_selector_of_clusters(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(
        event_store,
        [labelled("east", "prod"), labelled("west", "dev"), labelled("north", "prod")],
    )
    await append_each(event_store, [override("web", "east"), override("web", "west")])
    async with (
        live_api(event_store, tmp_path / "hub", projector=True) as api,
        api.client(Role.viewer) as client,
    ):

        async def clusters() -> list[Any]:
            listed: list[Any] = (await client.get("/api/v1/clusters")).json()
            return listed

        await eventually_value(clusters, "the clusters projected", lambda c: len(c) == 3)
        prod = (await client.get("/api/v1/events", params={"selector": "env=prod"})).json()
        not_prod = (await client.get("/api/v1/events", params={"selector": "env!=prod"})).json()
        nothing = (await client.get("/api/v1/events", params={"selector": "env=qa"})).json()
        bad = await client.get("/api/v1/events", params={"selector": "env in (prod"})
        params = {"from_seq": "1", "selector": "env=dev", "streams": "events"}
        async with client.stream("GET", "/api/v1/events/stream", params=params) as response:
            stream = sse_events(response)
            replayed = [json.loads((await next_event(stream))["data"])["seq"] for _ in range(2)]
            await append_each(event_store, [override("api", "north"), override("api", "west")])
            live = json.loads((await next_event(stream))["data"])
    assert [e["seq"] for e in prod["events"]] == [1, 3, 4]
    assert [e["seq"] for e in not_prod["events"]] == [2, 5]
    assert nothing["events"] == []
    assert bad.status_code == 400
    assert "invalid selector 'env in (prod' at position 13" in bad.json()["detail"]
    assert replayed == [2, 5]
    assert (live["seq"], live["event"]["cluster"]) == (7, "west")
