"""The fleet page over HTTP: counts over the whole fleet, one filtered page of clusters at a
time (paging and filters answered by SQLite), each page with only its clusters' placements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from api.auth import Role
from events.catalog import ClusterRegistered, ClusterTaskScheduled, Event, ScheduledCluster
from events.ids import new_event_id
from events.store import EventStore
from tests.integration.api_harness import live_api, projected
from tests.integration.test_api_events import (
    NOW,
    append_each,
    applied,
    published,
    reports_store,
)

CLUSTERS = [f"edge-{i:03d}" for i in range(120)]


def registered(cluster: str, index: int) -> ClusterRegistered:
    labels = {"env": "prod" if index % 3 else "dev", "region": f"r{index % 4}"}
    if index % 10 == 0:
        labels["canary"] = "yes"
    return ClusterRegistered(
        id=new_event_id(), occurred_at=NOW, actor="user:test", cluster=cluster, labels=labels
    )


def fleet() -> list[Event]:
    return [
        *(registered(name, i) for i, name in enumerate(CLUSTERS)),
        published("web"),
        ClusterTaskScheduled(
            id=new_event_id(),
            occurred_at=NOW,
            actor="scheduler",
            taskset="web",
            clusters=[
                ScheduledCluster(
                    cluster=name, taskset_version=1, generation=1, digest="sha256:" + "ab" * 32
                )
                for name in CLUSTERS[:100]
            ],
        ),
    ]


async def test_a_fleet_page_lists_one_filtered_page_and_counts_the_whole_fleet(
    event_store: EventStore, tmp_path: Path
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, fleet())
    done: list[Event] = [
        msgspec.structs.replace(applied(name, "web"), generation=1) for name in CLUSTERS[:7]
    ]
    await append_each(reports, done)
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        await projected(api)
        async with api.client(Role.viewer) as client:

            async def page(**params: Any) -> Any:
                answer = await client.get("/api/v1/fleet", params=params)
                assert answer.status_code == 200, answer.text
                return answer.json()

            first = await page()
            third = await page(offset=100, limit=10)
            tail = await page(offset=110, limit=50)
            applied_only = await page(state="applied")
            pending = await page(state="pending", limit=500)
            dev_canaries = await page(selector="env=dev,canary", limit=500)
            not_prod = await page(selector="env notin (prod),region in (r0,r2)", limit=500)
            named = await page(q="edge-11")
            placed = await page(q="-09", taskset="web")
            unplaced = await page(q="edge-11", taskset="web")
            connected = await page(connected="true", limit=500)
            offline = await page(connected="false", limit=3)
            etag = (await client.get("/api/v1/fleet")).headers["etag"]
            again = await client.get("/api/v1/fleet", headers={"If-None-Match": etag})
            bad = {
                "state": await client.get("/api/v1/fleet", params={"state": "sleeping"}),
                "limit": await client.get("/api/v1/fleet", params={"limit": 501}),
                "offset": await client.get("/api/v1/fleet", params={"offset": -1}),
                "selector": await client.get("/api/v1/fleet", params={"selector": "env in"}),
                "taskset": await client.get("/api/v1/fleet", params={"taskset": "Not_A_Name"}),
            }

    def names(answer: Any) -> list[str]:
        return [c["name"] for c in answer["clusters"]]

    summary = first["summary"]
    assert summary["clusters"] == 120
    assert summary["connected"] == 7, "the seven that reported"
    assert summary["tasksets"] == 1
    assert summary["states"] == {"applied": 7, "pending": 93}
    assert (first["total"], first["offset"], first["limit"]) == (120, 0, 50)
    assert names(first) == CLUSTERS[:50]
    assert {c["cluster"] for c in first["cells"]} == set(CLUSTERS[:50])
    assert names(third) == CLUSTERS[100:110]
    assert third["cells"] == [], "edge-100 and on have nothing placed"
    assert names(tail) == CLUSTERS[110:]
    assert applied_only["total"] == 7
    assert names(applied_only) == CLUSTERS[:7]
    assert names(pending) == CLUSTERS[7:100]
    assert names(dev_canaries) == [n for i, n in enumerate(CLUSTERS) if i % 30 == 0]
    assert names(not_prod) == [n for i, n in enumerate(CLUSTERS) if i % 3 == 0 and i % 2 == 0]
    assert names(named) == [f"edge-11{d}" for d in range(10)]
    assert names(placed) == [f"edge-09{d}" for d in range(10)]
    assert unplaced["total"] == 0
    assert names(connected) == CLUSTERS[:7]
    assert all(c["connected"] for c in connected["clusters"])
    assert (offline["total"], names(offline)) == (113, CLUSTERS[7:10])
    assert again.status_code == 304
    for field, answer in bad.items():
        assert answer.status_code == 400, (field, answer.text)
        assert "Traceback" not in answer.text
    assert "state 'sleeping': not one of pending" in bad["state"].json()["detail"]
    assert "invalid selector 'env in'" in bad["selector"].json()["detail"]
    assert "query parameter 'limit'" in bad["limit"].json()["detail"]
    assert "query parameter 'offset'" in bad["offset"].json()["detail"]
    assert "invalid taskset name 'Not_A_Name'" in bad["taskset"].json()["detail"]
