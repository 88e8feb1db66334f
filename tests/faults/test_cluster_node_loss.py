"""R3: the hub's streams on a 3-node NATS cluster, replicated 3 times, survive losing a node.

Three nats-server processes on loopback (configs from `infra/nats/cluster-node.conf.tmpl`)
carry EVENTS, DESIRED and REPORTS with three replicas. Writer processes connected to all three
nodes append a burst; at a seeded point the test kills (SIGKILL) the node leading EVENTS, or a
follower. Appends must go on after the kill, every acknowledged event must be in the log exactly
once, and the killed node, started again, must catch up to the same last sequence. The
projector, connected to all three nodes, follows the log through the loss and ends equal to a
clean replay.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from events.store import EventStore, connect
from events.streams import (
    DESIRED_STREAM,
    EVENTS_STREAM,
    REPORTS_STREAM,
    SNAPSHOTS_STREAM,
    hub_streams,
)
from fleetbus.datadir import DataDir
from tests.eventually import eventually
from tests.faults.harness import (
    LONG,
    WriterFleet,
    check_exactly_once,
    read_log,
    record_figures,
    split_evenly,
)
from tests.faults.nats_cluster import NatsCluster
from tests.faults.projection import clean_replay_digests, start_projector

WRITERS = 3


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "cluster", DataDir(tmp_path / "hub"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_store(nats_cluster: NatsCluster) -> AsyncIterator[EventStore]:
    nc = await connect(nats_cluster.urls, credentials=nats_cluster.credentials)
    store = EventStore(nc, timeout=3.0)
    await store.ensure_streams(hub_streams(replicas=3))
    try:
        yield store
    finally:
        await store.close()


async def replicas_current(store: EventStore, stream: str) -> bool:
    cluster: dict[str, Any] = (await store.stream_info(stream)).get("cluster", {})
    peers = cluster.get("replicas", [])
    return bool(cluster.get("leader")) and len(peers) == 2 and all(p.get("current") for p in peers)


async def test_every_hub_stream_is_replicated_on_all_three_nodes(
    nats_cluster: NatsCluster, cluster_store: EventStore
) -> None:
    for stream in (EVENTS_STREAM, DESIRED_STREAM, REPORTS_STREAM, SNAPSHOTS_STREAM):
        info = await cluster_store.stream_info(stream)
        assert info["config"]["num_replicas"] == 3
        await eventually(
            lambda stream=stream: replicas_current(cluster_store, stream),
            f"{stream}: a leader and two current replicas",
            within=30,
        )
        placed = {info["cluster"]["leader"], *(p["name"] for p in info["cluster"]["replicas"])}
        assert placed == set(nats_cluster.names)


@pytest.mark.parametrize(
    ("seed", "total", "victim"),
    [
        pytest.param(311, 3_000, "leader", id="seed=311-events=3000-kill=leader"),
        pytest.param(97, 10_000, "leader", id="seed=97-events=10000-kill=leader", marks=LONG),
        pytest.param(
            5150,
            10_000,
            "follower",
            id="seed=5150-events=10000-kill=follower",
            marks=LONG,
        ),
    ],
)
async def test_killing_one_node_of_three_during_a_burst_loses_nothing_acknowledged(
    nats_cluster: NatsCluster,
    cluster_store: EventStore,
    tmp_path: Path,
    seed: int,
    total: int,
    victim: str,
) -> None:
    rng = random.Random(seed)
    await eventually(
        lambda: replicas_current(cluster_store, EVENTS_STREAM),
        "EVENTS: a leader and two current replicas",
        within=30,
    )
    fleet = WriterFleet(
        urls=nats_cluster.urls,
        credentials=nats_cluster.credentials,
        directory=tmp_path / "writers",
        seed=seed,
        counts=split_evenly(total, WRITERS),
        timeout=3.0,
    )
    started = time.monotonic()
    projector = await start_projector(
        nats_cluster.urls, nats_cluster.credentials, tmp_path / "projector.db"
    )
    fleet.start()
    try:
        kill_at = int(total * rng.uniform(0.2, 0.5))
        await eventually(
            lambda: fleet.acknowledged() >= kill_at, f"{kill_at} acknowledged", within=120
        )
        leader = (await cluster_store.stream_info())["cluster"]["leader"]
        if victim == "leader":
            killed = nats_cluster.index_of(leader)
        else:
            killed = rng.choice([i for i, name in enumerate(nats_cluster.names) if name != leader])
        acknowledged_at_kill = fleet.acknowledged()
        killed_at = time.monotonic()
        nats_cluster.nodes[killed].kill()
        assert acknowledged_at_kill < total, "the kill came after the burst: it proves nothing"
        resume_mark = acknowledged_at_kill + min(200, total - acknowledged_at_kill)
        await eventually(
            lambda: fleet.acknowledged() >= resume_mark,
            "appends continuing after the kill",
            within=60,
        )
        resumed_after = time.monotonic() - killed_at
        await fleet.wait(within=240)
        last = await cluster_store.last_sequence()
        await eventually(
            lambda: projector.caught_up(last), f"the projector reaching sequence {last}", 120
        )
    finally:
        fleet.kill_all()
        await projector.stop()
    assert await projector.digests() == await clean_replay_digests(cluster_store, tmp_path)
    log = await read_log(cluster_store)
    check_exactly_once(fleet, log)
    assert len(log) == total
    new_leader = (await cluster_store.stream_info())["cluster"]["leader"]
    if victim == "leader":
        assert new_leader != nats_cluster.names[killed]

    nats_cluster.nodes[killed].start(60.0)
    last = await cluster_store.last_sequence()
    await eventually(
        lambda: nats_cluster.stream_last_seq(killed, EVENTS_STREAM) == last,
        f"{nats_cluster.names[killed]} catching up to sequence {last}",
        within=60,
        interval=0.2,
    )
    record_figures(
        "R3 cluster node kill -9",
        seed=seed,
        writers=WRITERS,
        appended=total,
        stored=len(log),
        killed=f"{victim} {nats_cluster.names[killed]}",
        acknowledged_at_kill=acknowledged_at_kill,
        appends_resumed_after_s=round(resumed_after, 2),
        commands_retried=fleet.retried_commands(),
        faults_injected=1,
        events_lost=0,
        duplicates=0,
        projection_equals_clean_replay=True,
        seconds=round(time.monotonic() - started, 1),
    )
