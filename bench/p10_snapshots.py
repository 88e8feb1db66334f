"""P10 — Snapshots: `state --at` on a log of 1,000,000 events, from a snapshot and by full replay.

The log is a fleet of 1,000 clusters and 20 tasksets followed by ClusterTask decisions (each a
`ClusterTaskScheduled` whose digest is the real one, so every answer is recomputed and
verified), written as pipelined atomic batches like P4. A snapshot is taken (`SnapshotTaker`,
the scheduler leader's own way: the whole fold with every cluster's history, stored in the
SNAPSHOTS stream), then a tail of `TAIL` more decisions is appended, half a default snapshot
interval: what a question asked between two snapshots has to fold.

`state --at` is then answered for one cluster the two ways the hub can:
`scheduler.snapshot_store.desired_state_from_log` (the newest snapshot, that cluster's history
and the contents it names, then the tail) and `scheduler.history.desired_state_at` over the
whole log. Both answers are compared; the figure fails if they differ.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubs import throwaway_hub
from bench.summary import median
from events.catalog import (
    ClusterRegistered,
    ClusterTaskScheduled,
    Event,
    Placement,
    ScheduledCluster,
    TasksetPublished,
)
from events.ids import new_event_id
from events.store import Append, AppendResult, EventStore
from events.streams import REPORTS_STREAM
from fleetbus.commands.state import state_document
from scheduler.history import desired_state_at
from scheduler.snapshot_store import SNAPSHOT_EVERY, SnapshotTaker, desired_state_from_log
from taskset.codec import encode_taskset
from taskset.digest import digest_of
from taskset.model import SourceInfo, Step, Taskset

KEY = "P10"
TITLE = "Snapshots: state --at on a log of 1,000,000 events"
TARGETS = [
    Target(
        metric="state_at_snapshot_s",
        label="state --at from a snapshot, 1,000,000-event log",
        bound=0.5,
        unit="s",
    ),
]

CLUSTERS = 1_000
TASKSETS = 20
BATCH = 1_000
TAIL = SNAPSHOT_EVERY // 2


def taskset(index: int) -> Taskset:
    name = f"app-{index}"
    return Taskset(
        name=name,
        namespace="bench",
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "bench"},
                    "data": {"index": str(index)},
                }
            )
        ],
        source=SourceInfo(format="yaml", digest="sha256:" + "0" * 64),
    )


def fleet(now: datetime) -> list[Event]:
    events: list[Event] = [
        ClusterRegistered(
            id=new_event_id(),
            occurred_at=now,
            actor="bench",
            cluster=f"edge-{i}",
            labels={"env": "prod"},
        )
        for i in range(CLUSTERS)
    ]
    for index in range(TASKSETS):
        body = taskset(index)
        encoded = encode_taskset(body)
        events.append(
            TasksetPublished(
                id=new_event_id(),
                occurred_at=now,
                actor="bench",
                taskset=body.name,
                taskset_version=1,
                digest=digest_of(body),
                source_digest="sha256:" + "0" * 64,
                format="yaml",
                body=encoded,
                body_size=len(encoded),
                placement=Placement(selector="env=prod"),
            )
        )
    return events


def decisions(start: int, count: int, now: datetime, digests: list[str]) -> list[Event]:
    """Decision `i` gives cluster `i % CLUSTERS` taskset `(i // CLUSTERS) % TASKSETS` again."""
    events: list[Event] = []
    pairs = CLUSTERS * TASKSETS
    for i in range(start, start + count):
        cause = new_event_id()
        index = (i // CLUSTERS) % TASKSETS
        events.append(
            ClusterTaskScheduled(
                id=new_event_id(),
                occurred_at=now,
                actor="scheduler",
                correlation_id=cause,
                causation_id=cause,
                taskset=f"app-{index}",
                clusters=[
                    ScheduledCluster(
                        cluster=f"edge-{i % CLUSTERS}",
                        taskset_version=1,
                        generation=1 + i // pairs,
                        digest=digests[index],
                    )
                ],
                caused_by=[cause],
            )
        )
    return events


async def append_all(store: EventStore, events: list[Event]) -> None:
    commands = [Append(events=events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
    outcomes = await store.append_many(commands, window=32 * BATCH)
    failed = [o for o in outcomes if not isinstance(o, AppendResult)]
    if failed:
        raise RuntimeError(f"{len(failed)} appends failed, first: {failed[0]}")


async def fill(store: EventStore, upto: int, written: int, now: datetime) -> int:
    digests = [digest_of(taskset(index)) for index in range(TASKSETS)]
    while written < upto:
        count = min(upto - written, 32 * BATCH * 4)
        await append_all(store, decisions(written, count, now, digests))
        written += count
    return written


async def run(mode: Mode) -> FigureResult:
    now = datetime.now(UTC)
    size = 100_000 if mode.quick else 1_000_000
    runs: dict[str, list[float]] = {"snapshot": [], "replay": [], "take": []}
    async with throwaway_hub() as hub:
        store = await hub.store()
        try:
            start = fleet(now)
            await append_all(store, start)
            filled_started = time.perf_counter()
            written = await fill(store, size - TAIL - len(start), 0, now)
            fill_s = time.perf_counter() - filled_started
            reports = store.on_stream(REPORTS_STREAM)
            taker = SnapshotTaker(store, reports, None)
            started = time.perf_counter()
            taken = await taker.take(datetime.now(UTC))
            runs["take"].append(time.perf_counter() - started)
            if taken is None:
                raise RuntimeError("no snapshot of a full log")
            await fill(store, written + TAIL, written, now)
            held = await store.last_sequence()
            asked = [f"edge-{i}" for i in (0, CLUSTERS // 2, CLUSTERS - 1)]
            for _ in range(mode.repeats):
                for cluster in asked:
                    started = time.perf_counter()
                    answer = await desired_state_from_log(store, cluster, None, None)
                    runs["snapshot"].append(time.perf_counter() - started)
            for repeat in range(mode.repeats):
                cluster = asked[repeat % len(asked)]
                started = time.perf_counter()
                replayed = await desired_state_at(store.read(skip_undecodable=True), cluster)
                runs["replay"].append(time.perf_counter() - started)
                answer = await desired_state_from_log(store, cluster, None, None)
                if state_document(answer, now) != state_document(replayed, now):
                    raise RuntimeError(f"{cluster}: the snapshot's answer differs from a replay")
                if len(answer.tasks) != TASKSETS or not all(t.verified for t in answer.tasks):
                    raise RuntimeError(f"{cluster}: expected {TASKSETS} verified tasks")
        finally:
            await store.close()

    from_snapshot = median(runs["snapshot"])
    replay = median(runs["replay"])
    metrics = [
        Metric(
            key="state_at_snapshot_s",
            label=f"state --at one cluster from the snapshot + {TAIL:,} events after it",
            unit="s",
            value=from_snapshot,
            runs=runs["snapshot"],
        ),
        Metric(
            key="state_at_replay_s",
            label=f"state --at one cluster by replaying all {held:,} events",
            unit="s",
            value=replay,
            runs=runs["replay"],
        ),
        Metric(
            key="replay_to_snapshot_ratio",
            label="full replay time / snapshot time (the machine is shared: this is the figure)",
            unit="x",
            value=replay / from_snapshot if from_snapshot else None,
            better="higher",
        ),
        Metric(
            key="snapshot_take_s",
            label="taking the snapshot from nothing (whole log folded, every cluster's history)",
            unit="s",
            value=median(runs["take"]),
            runs=runs["take"],
        ),
        Metric(
            key="snapshot_mb",
            label=f"snapshot size ({taken.clusters:,} cluster histories, "
            f"{taken.contents} contents)",
            unit="MB",
            value=taken.size / 1e6,
        ),
    ]
    method = (
        "One hub nats-server (the hub's own config, file storage) and one client process on "
        f"the same machine. The log: {CLUSTERS:,} ClusterRegistered, {TASKSETS} "
        f"TasksetPublished, then ClusterTaskScheduled events to {held:,} in all (filled at "
        f"{(written + len(start)) / fill_s:,.0f} events/s, pipelined atomic batches of "
        f"{BATCH:,}). One snapshot was taken {TAIL:,} events before the end. `state --at` "
        f"from the snapshot was timed {mode.repeats} times for each of {len(asked)} clusters; "
        f"the full replay {mode.repeats} times; each answer from the snapshot was compared "
        "with the replay's."
        + (" Quick mode: the log is 100,000 events, not 1,000,000." if mode.quick else "")
    )
    notes = [
        "From a snapshot, `state --at` reads the manifests, the placement part (clusters, "
        "tasksets, overrides, blueprints), one cluster's history and the contents it names, "
        "and folds only the events after the snapshot. A full replay reads and folds every "
        "event. Both recompute the content of each decision they fold for that cluster.",
        "The machine is shared: absolute times move with its load; the ratio is the figure.",
    ]
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra={"log_events": held, "quick": mode.quick, "tail_events": TAIL},
    )
