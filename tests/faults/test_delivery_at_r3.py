"""Delivery at R3: no Raft group per cluster, and a node lost mid-rollout loses nothing.

Each cluster's durable consumer on DESIRED has one replica (`scheduler.provisioning`), even
when DESIRED has three: a replicated consumer would be a Raft group of its own on every node.
On a real 3-node cluster these tests count the Raft groups each node takes part in
(`/raftz`) as the fleet grows, and kill a node while a rollout is under way: the durables it
held are created again on the nodes that are up and every cluster applies the new version.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from edge_connector.jetstream import DurableFeed
from events import edges, subjects
from events.appends import AppendResult
from events.catalog import ClusterRegistered, TaskApplied
from events.errors import EventLogUnavailable
from events.pull import ContinuousPull
from events.store import EventStore, connect
from events.streams import DESIRED_STREAM, REPORTS_STREAM, hub_streams
from events.tasks import cancel_and_wait
from fleetbus.datadir import DataDir
from fleetbus.local import open_local_store
from fleetbus.natsserver import free_port
from scheduler.durable_moves import DurableMoves
from scheduler.provisioning import CLUSTER_EVENTS, DurableRehoming, ProvisioningService
from simulator.fleet import SIM_LABEL, register_clusters
from tests.eventually import eventually, eventually_value
from tests.faults.harness import REPO, record_figures
from tests.faults.nats_cluster import NatsCluster
from tests.faults.test_hub_on_cluster import FLEETBUS, fleetbus, hub_answers

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXAMPLE = REPO / "examples" / "yaml" / "status-board"


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
    store = EventStore(nc, timeout=5.0)
    await store.ensure_streams(hub_streams(replicas=3))
    try:
        yield store
    finally:
        await store.close()


def client_cluster(name: str) -> ClusterRegistered:
    return ClusterRegistered(
        id=f"reg-{name}",
        occurred_at=NOW,
        actor="test",
        cluster=name,
        labels={edges.CONNECTION_LABEL: edges.CLIENT},
    )


async def durable_placement(store: EventStore, *, allow_missing: bool = False) -> dict[str, str]:
    """Durable on DESIRED -> the node leading it (every one of them answering, unless
    `allow_missing`: then those not answering are left out)."""
    placed: dict[str, str] = {}
    while True:
        page = await store.api_request(f"CONSUMER.LIST.{DESIRED_STREAM}", {"offset": len(placed)})
        if page.get("missing") and not allow_missing:
            raise AssertionError(f"durables not answering: {page['missing']}")
        for info in page.get("consumers") or []:
            placed[info["name"]] = info["cluster"]["leader"]
        if not page.get("consumers") or len(placed) >= int(page["total"]):
            return placed


def durables_held(nats_cluster: NatsCluster, index: int) -> set[str]:
    """The consumers of DESIRED node `index` holds a copy of, by its own account (`/jsz`)."""
    answer = nats_cluster.monitor(index, "/jsz?accounts=true&streams=true&consumers=true")
    return {
        str(consumer["name"])
        for account in answer.get("account_details", [])
        for detail in account.get("stream_detail", [])
        if detail.get("name") == DESIRED_STREAM
        for consumer in detail.get("consumer_detail") or []
    }


async def test_the_raft_groups_of_a_three_node_cluster_do_not_grow_with_the_fleet(
    nats_cluster: NatsCluster, cluster_store: EventStore
) -> None:
    service = ProvisioningService(cluster_store, replicas=3)
    runner = asyncio.create_task(service.run())
    streams = {info["name"] for info in hub_streams(replicas=3)}
    groups_at: dict[int, list[int]] = {}
    try:
        registered = 0
        for fleet in (4, 60):
            events = [client_cluster(f"c-{i}") for i in range(registered, fleet)]
            result = await cluster_store.append(events)
            registered = fleet
            await asyncio.wait_for(service.wait_applied(max(result.sequences)), 60)

            async def all_durables(fleet: int = fleet) -> bool:
                return len(await durable_placement(cluster_store, allow_missing=True)) == fleet

            await eventually(all_durables, f"{fleet} durables answering", within=30)
            await eventually(
                lambda fleet=fleet: (
                    sum(nats_cluster.consumers_on(i, DESIRED_STREAM) for i in range(3)) == fleet
                ),
                f"each of the {fleet} durables held by one node only",
                within=30,
            )
            # Only the streams' groups: a durable at R3 would add one on every node.
            await eventually(
                lambda: all(
                    len(nats_cluster.raft_groups(i)) == len(streams)
                    and not any(name.startswith("C-") for name in nats_cluster.raft_groups(i))
                    for i in range(3)
                ),
                f"only the {len(streams)} streams' Raft groups on every node at {fleet} clusters",
                within=30,
            )
            groups_at[fleet] = [len(nats_cluster.raft_groups(i)) for i in range(3)]
    finally:
        await cancel_and_wait([runner])
    assert groups_at[4] == groups_at[60]
    record_figures(
        "Raft groups per node at R3",
        clusters={str(k): v for k, v in groups_at.items()},
        streams=len(streams),
    )


REHOMED_CLUSTERS = 12
RECOVERED_WITHIN_S = 18.0
"""A lost node's clusters must read new desired state this soon after the kill (measured here:
8-13 s, bounded by the durable's 10 s `ack_wait` for a message lost on its way). A pull
request whose silence is noticed after 21 s (heartbeats every 10 s) cannot make it, nor a
rehoming that misses the node a newly elected leader of DESIRED never heard from."""


async def test_clusters_of_a_lost_node_read_new_desired_state_within_seconds(
    nats_cluster: NatsCluster, cluster_store: EventStore
) -> None:
    service = ProvisioningService(cluster_store, replicas=3)
    provisioning = asyncio.create_task(service.run())
    names = [f"c-{i}" for i in range(REHOMED_CLUSTERS)]
    received: dict[str, set[bytes]] = {name: set() for name in names}
    pullers: list[asyncio.Task[None]] = []
    rehomer: asyncio.Task[None] | None = None
    pulls = await connect(nats_cluster.urls, credentials=nats_cluster.credentials)
    try:

        async def register() -> AppendResult | None:
            try:  # a cluster just formed may still be electing the log's leader
                return await cluster_store.append([client_cluster(name) for name in names])
            except EventLogUnavailable:
                return None

        result = await eventually_value(register, "the clusters registered", within=30)
        await asyncio.wait_for(service.wait_applied(max(result.sequences)), 60)

        async def all_durables() -> bool:
            return len(await durable_placement(cluster_store, allow_missing=True)) == len(names)

        await eventually(all_durables, "every cluster's durable answering", within=30)
        placement = await durable_placement(cluster_store)
        victim, held = Counter(placement.values()).most_common(1)[0]
        lost = sorted(name for name in names if placement[edges.desired_durable(name)] == victim)

        async def pull(name: str) -> None:
            # The edge's own pull settings (heartbeat, expiry) on the cluster's durable.
            feed = DurableFeed(pulls, name)
            pull = ContinuousPull(
                pulls,
                api_prefix="$JS.API",
                stream=DESIRED_STREAM,
                durable=edges.desired_durable(name),
                settings=feed.settings,
            )
            async for msgs in pull.batches():
                for msg in msgs:
                    received[name].add(msg.data)
                    with contextlib.suppress(nats.errors.Error):
                        await msg.ack()

        pullers = [asyncio.create_task(pull(name)) for name in names]
        js = cluster_store.nc.jetstream()

        async def desire(version: bytes) -> None:
            for name in names:
                subject = f"{subjects.desired_filter(name)[:-1]}board"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await js.publish(subject, version, stream=DESIRED_STREAM, timeout=2)
                        break
                    except (nats.errors.Error, nats.js.errors.Error):
                        # DESIRED electing a leader after the kill: the writer asks again.
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)

        def everyone_read(version: bytes) -> bool:
            return all(version in seen for seen in received.values())

        await desire(b"v1")
        await eventually(lambda: everyone_read(b"v1"), "every cluster reading v1", within=30)

        nats_cluster.nodes[nats_cluster.index_of(victim)].kill()
        killed_at = time.monotonic()
        rehoming = DurableRehoming(service)
        rehomer = asyncio.create_task(rehoming.run())
        await desire(b"v2")
        await eventually(
            lambda: everyone_read(b"v2"),
            f"every cluster, the {held} of {victim} too, reading v2 (read: {received})",
            within=RECOVERED_WITHIN_S - (time.monotonic() - killed_at),
        )
        recovered_s = time.monotonic() - killed_at

        async def moved_off_victim() -> bool:
            after = await durable_placement(cluster_store, allow_missing=True)
            return set(after) == set(placement) and victim not in after.values()

        await eventually(moved_off_victim, f"the durables off {victim}", within=30)

        # Back, the lost node keeps no copy of a durable moved off it (it may load them
        # from disk after applying their new assignments: the hub resets those durables once
        # it is back): every durable is held once, by the node the meta layer assigns it to.
        lost_index = nats_cluster.index_of(victim)
        await asyncio.to_thread(nats_cluster.nodes[lost_index].start, 60.0)

        async def held_once_where_assigned() -> tuple[dict[str, str], dict[str, list[str]]]:
            assigned = await durable_placement(cluster_store, allow_missing=True)
            holders = {nats_cluster.names[i]: durables_held(nats_cluster, i) for i in range(3)}
            copies = {
                durable: sorted(node for node, names in holders.items() if durable in names)
                for durable in set(placement) | set().union(*holders.values())
            }
            return assigned, copies

        async def settled() -> bool:
            assigned, copies = await held_once_where_assigned()
            return set(assigned) == set(placement) and copies == {
                durable: [node] for durable, node in assigned.items()
            }

        await eventually(
            lambda: not rehoming.moved_off,
            f"the durables moved off {victim} reset once it was back",
            within=30,
        )
        await eventually(
            settled, f"{victim} back, every durable held once, where assigned", within=30
        )

        # And every cluster reads the next desired state, from those durables.
        await desire(b"v3")
        await eventually(lambda: everyone_read(b"v3"), "every cluster reading v3", within=30)
        assigned, copies = await held_once_where_assigned()
        assert copies == {durable: [node] for durable, node in assigned.items()}
        assert set(assigned) == set(placement)
    finally:
        await cancel_and_wait([provisioning, *pullers, *([rehomer] if rehomer else [])])
        await pulls.close()
    record_figures(
        "Clusters of a lost node reading again",
        clusters=len(names),
        on_lost_node=len(lost),
        all_read_after_kill_s=round(recovered_s, 2),
    )


# In a loaded full run it once hung past the suite's 300 s timeout: kept out of `make test`.
@pytest.mark.long
async def test_a_hub_restarted_while_a_node_is_down_still_resets_the_durables_moved_off_it(
    nats_cluster: NatsCluster, cluster_store: EventStore
) -> None:
    """What was moved off a lost node is kept in JetStream: a hub started again while the
    node is down still resets those durables once it is back, so it keeps no copy of them."""
    names = [f"c-{i}" for i in range(REHOMED_CLUSTERS)]
    received: dict[str, set[bytes]] = {name: set() for name in names}
    running: list[asyncio.Task[None]] = []
    pulls = await connect(nats_cluster.urls, credentials=nats_cluster.credentials)

    hub_stores: list[EventStore] = []

    async def start_hub() -> tuple[ProvisioningService, DurableRehoming, list[asyncio.Task[None]]]:
        # Each hub on its own connection, closed when it goes (with nats-py's tasks on it).
        store = EventStore(await connect(nats_cluster.urls, credentials=nats_cluster.credentials))
        hub_stores.append(store)
        service = ProvisioningService(store, replicas=3)
        rehoming = DurableRehoming(service, moves=DurableMoves(store, replicas=3))
        return (
            service,
            rehoming,
            [asyncio.create_task(service.run()), asyncio.create_task(rehoming.run())],
        )

    try:
        service, rehoming, first_hub = await start_hub()
        running += first_hub

        async def register() -> AppendResult | None:
            try:  # a cluster just formed may still be electing the log's leader
                return await cluster_store.append([client_cluster(name) for name in names])
            except EventLogUnavailable:
                return None

        result = await eventually_value(register, "the clusters registered", within=30)
        await asyncio.wait_for(service.wait_applied(max(result.sequences)), 60)

        async def all_durables() -> bool:
            return len(await durable_placement(cluster_store, allow_missing=True)) == len(names)

        await eventually(all_durables, "every cluster's durable answering", within=30)
        await eventually(lambda: rehoming.restored, "the record of moves read", within=30)
        placement = await durable_placement(cluster_store)
        victim, _ = Counter(placement.values()).most_common(1)[0]
        on_victim = {name for name in names if placement[edges.desired_durable(name)] == victim}

        async def pull(name: str) -> None:
            feed = DurableFeed(pulls, name)
            pull = ContinuousPull(
                pulls,
                api_prefix="$JS.API",
                stream=DESIRED_STREAM,
                durable=edges.desired_durable(name),
                settings=feed.settings,
            )
            async for msgs in pull.batches():
                for msg in msgs:
                    received[name].add(msg.data)
                    with contextlib.suppress(nats.errors.Error):
                        await msg.ack()

        running += [asyncio.create_task(pull(name)) for name in names]
        js = cluster_store.nc.jetstream()

        async def desire(version: bytes) -> None:
            for name in names:
                subject = f"{subjects.desired_filter(name)[:-1]}board"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await js.publish(subject, version, stream=DESIRED_STREAM, timeout=2)
                        break
                    except (nats.errors.Error, nats.js.errors.Error):
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)

        await desire(b"v1")
        await eventually(
            lambda: all(b"v1" in seen for seen in received.values()), "every cluster at v1", 30
        )
        lost_index = nats_cluster.index_of(victim)
        nats_cluster.nodes[lost_index].kill()

        async def moved_off_victim() -> bool:
            try:
                after = await durable_placement(cluster_store, allow_missing=True)
            except EventLogUnavailable:  # DESIRED electing a leader: ask again
                return False
            return (
                set(after) == set(placement)
                and victim not in after.values()
                and rehoming.moved_off.get(victim) == on_victim
            )

        await eventually(moved_off_victim, f"the durables of {victim} moved off it", within=30)

        # The hub goes, and what it remembered in memory with it; another starts while
        # the node is still down.
        await cancel_and_wait(first_hub)
        await hub_stores[0].close()
        service, rehoming, second_hub = await start_hub()
        running += second_hub
        await eventually(lambda: rehoming.restored, "the restarted hub reading its record", 30)
        assert rehoming.moved_off == {victim: on_victim}

        await asyncio.to_thread(nats_cluster.nodes[lost_index].start, 60.0)
        await eventually(
            lambda: not rehoming.moved_off,
            f"the durables moved off {victim} reset once it was back",
            within=30,
        )
        assert await DurableMoves(cluster_store).load() == {}

        async def held_once_where_assigned() -> bool:
            assigned = await durable_placement(cluster_store, allow_missing=True)
            holders = {nats_cluster.names[i]: durables_held(nats_cluster, i) for i in range(3)}
            copies = {
                durable: sorted(node for node, held in holders.items() if durable in held)
                for durable in set(placement) | set().union(*holders.values())
            }
            return set(assigned) == set(placement) and copies == {
                durable: [node] for durable, node in assigned.items()
            }

        await eventually(
            held_once_where_assigned, f"{victim} back, every durable held once", within=30
        )
        await desire(b"v2")
        await eventually(
            lambda: all(b"v2" in seen for seen in received.values()),
            f"every cluster, the {len(on_victim)} moved off {victim} too, reading v2",
            within=30,
        )
    finally:
        await cancel_and_wait(running)
        await pulls.close()
        for store in hub_stores:
            await store.close()


REGISTERED = 2000


async def test_registrations_sent_while_the_log_s_leader_is_killed_are_each_stored_once(
    nats_cluster: NatsCluster, cluster_store: EventStore
) -> None:
    names = [f"c-{i}" for i in range(REGISTERED)]

    async def electable() -> bool:
        try:
            await cluster_store.last_sequence()
            return True
        except EventLogUnavailable:
            return False

    await eventually(electable, "the log answering", within=30)
    info = await cluster_store.stream_info()
    leader = info["cluster"]["leader"]
    registering = asyncio.create_task(
        register_clusters(cluster_store, [client_cluster(name) for name in names])
    )
    try:

        async def under_way() -> bool:
            try:
                return await cluster_store.last_sequence() >= REGISTERED // 10
            except EventLogUnavailable:
                return False

        await eventually(under_way, "registrations being stored", within=30)
        nats_cluster.nodes[nats_cluster.index_of(leader)].kill()
        last = await asyncio.wait_for(registering, 180)
    finally:
        await cancel_and_wait([registering])

    async def registered() -> Counter[str] | None:
        """How often each cluster's registration is stored, once the log answers reads again
        (right after the kill a read's consumer can go unanswered while the stream settles)."""
        counted: Counter[str] = Counter()
        try:
            async for event in cluster_store.read(subject=CLUSTER_EVENTS, skip_undecodable=True):
                if isinstance(event.event, ClusterRegistered):
                    counted[event.event.cluster] += 1
        except EventLogUnavailable:
            return None
        return counted

    async def last_sequence() -> int | None:
        try:
            return await cluster_store.last_sequence()
        except EventLogUnavailable:
            return None

    stored = await eventually_value(registered, "the registrations read back", within=60)
    assert set(stored) == set(names)
    assert set(stored.values()) == {1}, [n for n, c in stored.items() if c > 1][:5]
    assert last == await eventually_value(last_sequence, "the log's last sequence", within=60)


LOGGED = 500
READERS = 8


async def test_the_log_reads_back_in_full_right_after_the_node_leading_it_is_killed(
    nats_cluster: NatsCluster, cluster_store: EventStore
) -> None:
    """Reads started the moment the leader of EVENTS is lost each return the whole log: a
    first pull request nobody answers yet (503, or silence while a leader is elected) is
    asked again instead of failing the read."""

    async def appended() -> AppendResult | None:
        try:  # a cluster just formed may still be electing the log's leader
            return await cluster_store.append([client_cluster(f"c-{i}") for i in range(LOGGED)])
        except EventLogUnavailable:
            return None

    await eventually_value(appended, f"{LOGGED} events appended", within=30)
    leader = (await cluster_store.stream_info())["cluster"]["leader"]
    nats_cluster.nodes[nats_cluster.index_of(leader)].kill()

    async def read_all() -> int:
        return len([stored async for stored in cluster_store.read(subject=CLUSTER_EVENTS)])

    for _ in range(3):  # a burst of reads at once, three times in a row
        async with asyncio.TaskGroup() as readers:
            reads = [readers.create_task(read_all()) for _ in range(READERS)]
        assert [read.result() for read in reads] == [LOGGED] * READERS


async def published_and_applied(store: EventStore, taskset: str, version: int) -> set[str]:
    """Clusters whose TaskApplied for `taskset` `version` is in REPORTS."""
    applied: set[str] = set()
    async for stored in store.on_stream(REPORTS_STREAM).read(skip_undecodable=True):
        event = stored.event
        if (
            isinstance(event, TaskApplied)
            and event.taskset == taskset
            and event.taskset_version == version
            and not event.removed
        ):
            applied.add(event.cluster)
    return applied


@pytest.fixture
async def sim_hub(
    tmp_path: Path, nats_cluster: NatsCluster, request: pytest.FixtureRequest
) -> AsyncIterator[Path]:
    """`fleetbus up --nats-url … --replicas 3 --sim-clusters SIMS` on the cluster (and the
    options a test passes as the fixture's parameter)."""
    extra: tuple[str, ...] = getattr(request, "param", ())
    http_port = free_port()
    with (tmp_path / "hub.log").open("wb") as log:
        hub = subprocess.Popen(  # noqa: ASYNC220 - the hub runs beside the test
            [
                *FLEETBUS,
                "up",
                "--data-dir",
                str(tmp_path / "hub"),
                "--http",
                f"127.0.0.1:{http_port}",
                "--nats-url",
                ",".join(nats_cluster.urls),
                "--replicas",
                "3",
                "--sim-clusters",
                str(SIMS),
                *extra,
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await hub_answers(hub, f"http://127.0.0.1:{http_port}/healthz", tmp_path / "hub.log")
        yield tmp_path / "hub"
        assert hub.poll() is None, "the hub exited"
    finally:
        if hub.poll() is None:
            hub.terminate()
            try:
                hub.wait(20)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait(10)


SIMS = 24


async def publish(data_dir: Path, version: int) -> None:
    """`fleetbus publish` of the example to every simulated cluster, changed for `version`."""
    source = data_dir.parent / f"board-{version}"
    shutil.copytree(EXAMPLE, source)
    board = source / "board.yaml"
    board.write_text(board.read_text().replace("nominal", f"nominal (v{version})"))
    # Right after a node is lost the hub's API may answer "no answer from JetStream" while
    # leaders are elected; a user runs the same publish again (same content: one version).
    deadline = time.monotonic() + 60
    while True:
        done = await asyncio.to_thread(
            fleetbus,
            data_dir,
            "publish",
            str(source),
            "--name",
            "board",
            "--selector",
            f"{SIM_LABEL}=true",
        )
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert done.returncode == 0, done.stderr


async def applied_everywhere(store: EventStore, version: int, clusters: set[str]) -> bool:
    try:
        return await published_and_applied(store, "board", version) >= clusters
    except EventLogUnavailable:  # REPORTS electing a leader: read again
        return False


@pytest.mark.long  # in a loaded full run v2 once missed its 120 s wait: kept out of `make test`
@pytest.mark.timeout(900)
async def test_a_node_killed_mid_rollout_loses_no_cluster_and_its_durables_move(
    nats_cluster: NatsCluster, sim_hub: Path
) -> None:
    store = await open_local_store(sim_hub)
    try:
        sims = {f"sim-{i}" for i in range(1, SIMS + 1)}

        async def all_provisioned() -> bool:
            return len(await durable_placement(store)) == SIMS

        await eventually(all_provisioned, "every simulated cluster's durable", within=60)
        placement = await durable_placement(store)
        victim, held = Counter(placement.values()).most_common(1)[0]
        moved = {name for name, node in placement.items() if node == victim}
        assert held >= 1

        await publish(sim_hub, 1)
        nats_cluster.nodes[nats_cluster.index_of(victim)].kill()
        killed_at = time.monotonic()
        await eventually(
            lambda: applied_everywhere(store, 1, sims), f"all {SIMS} clusters applying v1", 120
        )
        first_s = time.monotonic() - killed_at
        # The durables of the lost node must have moved for the next version to reach them.
        await publish(sim_hub, 2)
        await eventually(
            lambda: applied_everywhere(store, 2, sims), f"all {SIMS} clusters applying v2", 240
        )
        converged_s = time.monotonic() - killed_at

        async def moved_off_victim() -> bool:
            after = await durable_placement(store, allow_missing=True)
            return set(after) == set(placement) and victim not in after.values()

        await eventually(moved_off_victim, f"the durables off {victim}", within=30)
    finally:
        await store.close()
    record_figures(
        "Node killed mid-rollout at R3",
        clusters=SIMS,
        killed=victim,
        durables_moved=len(moved),
        v1_all_applied_after_kill_s=round(first_s, 2),
        v2_all_applied_after_kill_s=round(converged_s, 2),
        clusters_lost=0,
    )


SIM_CONNECTION = "fleetbus-edge-sim-"


def sims_connected(nats_cluster: NatsCluster, index: int) -> set[str]:
    """The simulated clusters connected to node `index`, by name."""
    return {
        name.removeprefix("fleetbus-edge-")
        for name in nats_cluster.client_names(index, SIM_CONNECTION)
    }


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "sim_hub", [(), ("--sim-processes", "2")], ids=["in-process", "workers"], indirect=True
)
async def test_simulated_clusters_spread_over_every_node_and_fail_over_to_the_others(
    nats_cluster: NatsCluster, sim_hub: Path
) -> None:
    sims = {f"sim-{i}" for i in range(1, SIMS + 1)}
    # sim-1 on the first node of `--nats-url`, sim-2 on the second, ..., round and round.
    expected = [{f"sim-{i}" for i in range(k + 1, SIMS + 1, 3)} for k in range(3)]
    await eventually(
        lambda: [sims_connected(nats_cluster, k) for k in range(3)] == expected,
        "each node holding the connections of its third of the simulated clusters",
        within=60,
    )
    lost = 0
    nats_cluster.nodes[lost].kill()
    survivors = [k for k in range(3) if k != lost]
    await eventually(
        lambda: set().union(*(sims_connected(nats_cluster, k) for k in survivors)) == sims,
        f"the clusters of {nats_cluster.names[lost]} connected to the other nodes",
        within=60,
    )
    moved = [sims_connected(nats_cluster, k) & expected[lost] for k in survivors]
    store = await open_local_store(sim_hub)
    try:
        await publish(sim_hub, 1)
        await eventually(
            lambda: applied_everywhere(store, 1, sims),
            f"all {SIMS} clusters, those of {nats_cluster.names[lost]} too, applying v1",
            within=120,
        )
    finally:
        await store.close()
    record_figures(
        "Simulated clusters spread over the nodes",
        clusters=SIMS,
        per_node=[len(names) for names in expected],
        failed_over_to=[len(names) for names in moved],
    )
