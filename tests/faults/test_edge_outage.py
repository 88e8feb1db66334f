"""R2: an edge keeps working while the hub is unreachable; every report arrives once afterwards.

A real hub nats-server with its edge services, a real leaf nats-server for cluster `alpha` with
the real connector in front of the simulated cluster, and the projector following the hub. The
test kills the hub's nats-server (SIGKILL), then edits the cluster's live objects behind the
connector's back (seeded: which object, when) until the connector has produced and stored the
wanted number of drift reports in its outbox — all while the hub is down. When the hub comes
back, the hub's REPORTS stream (sourced from the outbox) must hold every one of those reports
exactly once, and the projector's read models must count each once (and equal a clean replay).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from pathlib import Path

import pytest

from events.catalog import Report
from events.store import EventStore
from events.streams import REPORTS_STREAM
from projector.db import ProjectionDb
from simulator.executor import SimExecutor
from tests.eventually import eventually
from tests.faults.harness import LONG, record_figures
from tests.faults.projection import clean_replay_digests, start_projector
from tests.integration.edge_harness import cluster_task, edge_hub, sample_taskset


async def report_ids(reports: EventStore) -> list[str]:
    return [stored.event.id async for stored in reports.read()]


@pytest.mark.parametrize(
    ("seed", "wanted"),
    [
        pytest.param(1001, 1_000, id="seed=1001-reports=1000"),
        pytest.param(3003, 5_000, id="seed=3003-reports=5000", marks=LONG),
    ],
)
async def test_reports_made_while_the_hub_is_unreachable_all_arrive_exactly_once(
    tmp_path: Path, seed: int, wanted: int
) -> None:
    rng = random.Random(seed)
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("alpha")
        sim = SimExecutor(name="alpha")
        edge = await hub.start_edge(bundle, executor=sim)
        produced: list[str] = []
        report_to_outbox = edge.connector.report

        def record_and_report(event: Report) -> None:
            produced.append(event.id)
            report_to_outbox(event)

        edge.connector.report = record_and_report  # type: ignore[method-assign]
        await hub.write_desired(cluster_task("alpha", sample_taskset("web")))
        reports = hub.store.on_stream(REPORTS_STREAM)
        projector = await start_projector(
            [hub.server.client_url], hub.credentials, tmp_path / "projector.db"
        )
        try:
            await eventually(
                lambda: bool(produced) and edge.connector.reported >= len(produced),
                "the first apply reported",
                30,
            )
            await eventually(
                lambda: reports_hold(reports, len(produced)), "the first report at the hub", 60
            )
            before_outage = len(produced)

            hub.server.kill()
            down_at = time.monotonic()
            objects = sim.owned_objects("web")
            edits = 0
            while len(produced) - before_outage < wanted:
                seen = len(produced)
                sim.edit(rng.choice(objects), "/metadata/annotations/edited", f"{seed}-{edits}")
                edits += 1
                await eventually(
                    lambda seen=seen: len(produced) > seen,
                    "the connector reporting the edit",
                    30,
                    0.001,
                )
            made_while_down = produced[before_outage:]
            await eventually(
                lambda: edge.connector.reported >= len(produced),
                "every report stored in the edge's outbox",
                60,
            )
            assert not hub.server.running(), "the hub came back before the reports were made"
            await asyncio.sleep(rng.uniform(2.0, 6.0))  # the outage goes on a while
            downtime = time.monotonic() - down_at

            await hub.restart_server()
            back_at = time.monotonic()
            await eventually(
                lambda: reports_hold(reports, len(produced)), "every report at the hub", 180, 0.5
            )
            arrived_after = time.monotonic() - back_at
            last = int((await reports.stream_info())["state"]["last_seq"])
            await eventually(
                lambda: projector.caught_up(last, REPORTS_STREAM),
                "the projector reading every report",
                60,
            )
        finally:
            await projector.stop()

        at_hub = collections.Counter(await report_ids(reports))
        twice = [event_id for event_id, count in at_hub.items() if count > 1]
        missing = [event_id for event_id in made_while_down if event_id not in at_hub]
        assert not twice, f"{len(twice)} reports stored twice at the hub"
        assert not missing, f"{len(missing)} reports made during the outage never arrived"
        assert len(made_while_down) >= wanted

        projected = await audit_counts(projector.path)
        assert all(projected[event_id] == 1 for event_id in produced), "a report projected twice"
        assert sum(projected[event_id] for event_id in made_while_down) == len(made_while_down)
        assert await projector.digests() == await clean_replay_digests(hub.store, tmp_path)
        record_figures(
            "R2 edge outage",
            seed=seed,
            reports_made_while_hub_down=len(made_while_down),
            objects_edited=edits,
            hub_down_s=round(downtime, 1),
            all_arrived_after_reconnect_s=round(arrived_after, 1),
            faults_injected=1,
            reports_lost=len(missing),
            reports_duplicated=len(twice),
            projection_equals_clean_replay=True,
        )


async def reports_hold(reports: EventStore, count: int) -> bool:
    info = await reports.stream_info()
    return int(info["state"]["messages"]) >= count


async def audit_counts(path: Path) -> collections.Counter[str]:
    db = await ProjectionDb.open_readonly(path)
    try:
        rows = await db.fetch_all(
            "SELECT event_id, count(*) AS n FROM audit WHERE stream = ? GROUP BY event_id",
            (REPORTS_STREAM,),
        )
    finally:
        await db.close()
    return collections.Counter({str(row["event_id"]): int(row["n"]) for row in rows})
