"""kill -9 of a scheduler process in the middle of a rollout: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from events.catalog import (
    ClusterTaskScheduled,
    RolloutAdvanced,
    RolloutStrategy,
    ScheduledCluster,
    TaskApplied,
)
from events.sealed import EventSealer
from events.store import EventStore
from taskset.digest import digest_of
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.integration.scheduler_harness import (
    desired,
    events_of,
    reports_store,
    running_scheduler,
    scheduled_of,
    versions,
)
from tests.scheduler_fixtures import (
    applied,
    deployment,
    envelope,
    make_taskset,
    published,
    registered,
)

CLUSTERS = ["a", "b", "c", "d", "e", "f"]


@contextmanager
def scheduler_process(hub: HubNats, log: Path, holder: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetbus.cli",
                "scheduler",
                "--data-dir",
                str(hub.data.root),
                "--nats-url",
                hub.url,
                "--holder",
                holder,
                "--lease-ttl",
                "3",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


async def test_a_scheduler_killed_mid_rollout_loses_and_doubles_nothing(
    hub_nats: HubNats, event_store: EventStore, tmp_path: Path
) -> None:
    # The scheduler process seals DESIRED with the hub's keyring; this test reads it with it.
    event_store.sealer = EventSealer(hub_nats.data.keyring())
    reports = await reports_store(event_store)
    await event_store.append([registered(c, env="prod") for c in CLUSTERS])
    log = tmp_path / "scheduler.log"
    strategy = RolloutStrategy(batch_size=2)

    async def all_at(version: int | str) -> bool:
        return await versions(event_store, CLUSTERS) == dict.fromkeys(CLUSTERS, version)

    with scheduler_process(hub_nats, log, "first") as first:
        await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])
        await eventually(lambda: all_at(1), what="v1 everywhere", within=60)
        await report_each(reports, [applied(c, "web", 1, 1) for c in CLUSTERS])
        await event_store.append(
            [
                published(
                    make_taskset("web", deployment("web", 2)),
                    2,
                    selector="env=prod",
                    rollout=strategy,
                )
            ]
        )
        # Killed while it may be deciding the first wave of v2.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)

    with scheduler_process(hub_nats, log, "second") as second:
        await eventually(
            lambda: _at(event_store, {"a": 2, "b": 2, "c": 1}), what="first wave", within=60
        )
        await report_each(reports, [applied(c, "web", 2, 2) for c in ("a", "b")])
        await eventually(lambda: _at(event_store, {"c": 2, "d": 2, "e": 1}), what="second wave")
        os.kill(second.pid, signal.SIGKILL)
        second.wait(30)
        # Reports that arrive while no scheduler runs are not lost either.
        await report_each(reports, [applied(c, "web", 2, 2) for c in ("c", "d")])

    with scheduler_process(hub_nats, log, "third"):
        await eventually(lambda: all_at(2), what="third wave", within=60)
        await report_each(reports, [applied(c, "web", 2, 2) for c in ("e", "f")])

    scheduled = await scheduled_of(event_store)
    per_cluster = Counter((e.cluster, e.generation) for e in scheduled)
    assert all(count == 1 for count in per_cluster.values()), per_cluster
    assert sorted(per_cluster) == sorted((c, g) for c in CLUSTERS for g in (1, 2))
    for cluster in CLUSTERS:
        task = await desired(event_store, cluster, "web")
        assert task is not None
        assert (task.version, task.generation) == (2, 2)
    waves = Counter(
        (e.taskset_version, e.wave) for e in await events_of(event_store, RolloutAdvanced)
    )
    assert waves == {(1, 0): 1, (2, 0): 1, (2, 1): 1, (2, 2): 1}


async def report_each(reports: EventStore, events: list[TaskApplied]) -> None:
    """One append per report, as edges send them (REPORTS takes no atomic batches)."""
    for event in events:
        await reports.append([event])


async def _at(store: EventStore, expected: dict[str, int]) -> bool:
    return await versions(store, list(expected)) == expected


async def test_a_decision_logged_but_not_yet_written_to_desired_is_written_at_restart(
    event_store: EventStore,
) -> None:
    """The crash window of the scheduler: ClusterTaskScheduled appended, DESIRED not written."""
    taskset = make_taskset("web")
    await event_store.append([registered("a"), published(taskset, 1, clusters=["a"])])
    logged = ClusterTaskScheduled(
        **envelope("scheduler"),
        taskset="web",
        clusters=[
            ScheduledCluster(
                cluster="a", taskset_version=1, generation=1, digest=digest_of(taskset)
            )
        ],
    )
    await event_store.append([logged])
    assert await desired(event_store, "a", "web") is None
    async with running_scheduler(event_store):
        await eventually(lambda: _at(event_store, {"a": 1}), what="DESIRED repaired")
    task = await desired(event_store, "a", "web")
    assert task is not None
    assert (task.generation, task.digest) == (1, logged.clusters[0].digest)
    scheduled = await events_of(event_store, ClusterTaskScheduled)
    assert [e.id for e in scheduled] == [logged.id]
