"""The scheduler against a real hub nats-server: placement, overrides, waves, refusals, leases."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Any

import pytest

from events.catalog import (
    ClusterTaskRefused,
    RolloutAdvanced,
    RolloutHalted,
    RolloutStrategy,
)
from events.store import EventStore
from scheduler.service import SchedulerService
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
    config_map,
    deployment,
    deregistered,
    failed,
    make_taskset,
    patch_override,
    published,
    registered,
    relabelled,
    values_override,
)


async def test_selector_placement_follows_label_changes(event_store: EventStore) -> None:
    await event_store.append([registered("a", env="prod"), registered("b", env="dev")])
    async with running_scheduler(event_store):
        await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])
        await eventually(
            lambda: _is(event_store, ["a", "b"], {"a": 1, "b": None}), what="a gets web"
        )
        await event_store.append([relabelled("b", env="prod")])
        await eventually(lambda: _is(event_store, ["a", "b"], {"a": 1, "b": 1}), what="b gets web")
        await event_store.append([relabelled("a", env="dev")])
        await eventually(
            lambda: _is(event_store, ["a", "b"], {"a": "removed", "b": 1}), what="a loses web"
        )
        await event_store.append([deregistered("b")])
        await eventually(
            lambda: _is(event_store, ["a", "b"], {"a": "removed", "b": None}),
            what="b's desired state purged",
        )
    scheduled = await scheduled_of(event_store)
    assert [(e.cluster, e.generation, e.removed) for e in scheduled] == [
        ("a", 1, False),
        ("b", 1, False),
        ("a", 2, True),
    ]


async def _is(store: EventStore, clusters: list[str], expected: dict[str, Any]) -> bool:
    return await versions(store, clusters) == expected


async def test_both_kinds_of_override_apply_in_precedence_order_and_only_changes_are_rewritten(
    event_store: EventStore,
) -> None:
    await event_store.append(
        [registered(c, env="prod") for c in ("a", "b")] + [registered("c", env="dev")]
    )
    async with running_scheduler(event_store):
        await event_store.append(
            [published(make_taskset("web", helm=True), 1, selector="env", values={"replicas": 1})]
        )
        await eventually(
            lambda: _is(event_store, ["a", "b", "c"], dict.fromkeys("abc", 1)),
            what="all three get web",
        )

        async def replicas_are(expected: dict[str, int]) -> bool:
            for cluster, count in expected.items():
                task = await desired(event_store, cluster, "web")
                if task is None or task.taskset is None:
                    return False
                if task.taskset.install[0].object["spec"]["replicas"] != count:
                    return False
            return True

        # One override at a time: events that arrive together are decided on together, so two
        # overrides appended back to back may make one rewrite of `a` instead of two.
        await event_store.append(
            [values_override("web", "prod-size", {"replicas": 3}, selector="env=prod")]
        )
        await eventually(lambda: replicas_are({"a": 3, "b": 3, "c": 1}), what="values override")
        await event_store.append(
            [patch_override("web", "a-only", "web", {"spec": {"replicas": 7}}, cluster="a")]
        )
        await eventually(lambda: replicas_are({"a": 7, "b": 3, "c": 1}), what="overrides applied")
        task_a = await desired(event_store, "a", "web")
        assert task_a is not None
        assert task_a.overrides == ["prod-size", "a-only"]
    by_cluster: dict[str, list[int]] = {}
    for event in await scheduled_of(event_store):
        by_cluster.setdefault(event.cluster, []).append(event.generation)
    assert by_cluster == {"a": [1, 2, 3], "b": [1, 2], "c": [1]}


async def test_rollout_waves_advance_on_reports_and_halt_on_failures(
    event_store: EventStore,
) -> None:
    clusters = ["a", "b", "c", "d", "e"]
    await event_store.append([registered(c, env="prod") for c in clusters])
    reports = await reports_store(event_store)
    strategy = RolloutStrategy(batch_size=2)
    async with running_scheduler(event_store):
        await event_store.append(
            [published(make_taskset("web"), 1, selector="env=prod", rollout=strategy)]
        )
        await eventually(
            lambda: _is(event_store, clusters, {"a": 1, "b": 1, "c": None, "d": None, "e": None}),
            what="first wave",
        )
        await reports.append([applied("a", "web", 1, 1)])
        await reports.append([applied("b", "web", 1, 1)])
        await eventually(
            lambda: _is(event_store, clusters, {"a": 1, "b": 1, "c": 1, "d": 1, "e": None}),
            what="second wave",
        )
        await reports.append([failed("c", "web", 1, 1)])
        await reports.append([applied("d", "web", 1, 1)])

        async def halted() -> bool:
            return bool(await events_of(event_store, RolloutHalted))

        await eventually(halted, what="rollout halted")
        assert await versions(event_store, ["e"]) == {"e": None}
    (halt,) = await events_of(event_store, RolloutHalted)
    assert (halt.wave, halt.failed) == (1, ["c"])
    waves = [(e.wave, e.clusters) for e in await events_of(event_store, RolloutAdvanced)]
    assert waves == [(0, ["a", "b"]), (1, ["c", "d"])]


async def test_a_taskset_over_the_size_limit_after_overrides_is_refused(
    event_store: EventStore,
) -> None:
    await event_store.append([registered("a"), registered("b")])
    # Incompressible text: 6 MB in the snapshot, 6 MB more from one cluster's override;
    # each event fits in 8 MB, the combination (about 9 MB compressed) does not.
    base = _noise(6_000_000)
    async with running_scheduler(event_store):
        await event_store.append(
            [
                published(
                    make_taskset("big", config_map("big", {"blob": base})), 1, clusters=["a", "b"]
                )
            ]
        )
        await eventually(lambda: _is2(event_store, "big", {"a": 1, "b": 1}), what="both get big")
        await event_store.append(
            [
                patch_override(
                    "big",
                    "more",
                    "big",
                    {"data": {"more": _noise(6_000_000)}},
                    cluster="a",
                    kind="ConfigMap",
                )
            ]
        )

        async def refused() -> bool:
            return bool(await events_of(event_store, ClusterTaskRefused))

        await eventually(refused, what="refusal", within=60)
    (refusal,) = await events_of(event_store, ClusterTaskRefused)
    assert refusal.cluster == "a"
    assert refusal.size > refusal.limit
    assert "over the limit" in refusal.reason
    task_a = await desired(event_store, "a", "big")
    assert task_a is not None
    assert task_a.generation == 1
    scheduled = await scheduled_of(event_store)
    assert [(e.cluster, e.generation) for e in scheduled] == [("a", 1), ("b", 1)]


async def _is2(store: EventStore, taskset: str, expected: dict[str, Any]) -> bool:
    return await versions(store, list(expected), taskset) == expected


def _noise(size: int) -> str:
    """Text that does not compress below 3/4 of its size (base64 of random bytes)."""
    return base64.b64encode(os.urandom(size * 3 // 4 + 3)).decode()[:size]


async def test_only_one_scheduler_decides_and_a_second_takes_over_when_it_stops(
    event_store: EventStore,
) -> None:
    await event_store.append([registered("a")])
    async with running_scheduler(event_store, holder="first", lease_ttl_s=3) as first:
        reports = await reports_store(event_store)
        second = SchedulerService(event_store, reports, None, holder="second", lease_ttl_s=3)
        stop = asyncio.Event()
        task = asyncio.create_task(second.run(stop))
        try:
            await event_store.append([published(make_taskset("web"), 1, clusters=["a"])])
            await eventually(lambda: _is(event_store, ["a"], {"a": 1}), what="first schedules")
            assert first.ready.is_set()
            assert not second.ready.is_set()
        finally:
            pass
    try:
        await eventually(lambda: second.ready.is_set(), what="second takes over")
        await event_store.append(
            [published(make_taskset("web", deployment("web", 2)), 2, clusters=["a"])]
        )
        await eventually(lambda: _is(event_store, ["a"], {"a": 2}), what="second schedules")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)
    generations = [e.generation for e in await scheduled_of(event_store)]
    assert generations == [1, 2]


async def test_a_scheduler_started_while_jetstream_does_not_answer_waits_for_it(
    event_store: EventStore, hub_nats: HubNats, caplog: pytest.LogCaptureFixture
) -> None:
    """Under a stalled or restarting hub the lease cannot be read: the scheduler says so once
    and asks again, then schedules once JetStream answers, instead of ending."""
    await event_store.append([registered("a")])
    reports = await reports_store(event_store)
    hub_nats.server.stop()
    scheduler = SchedulerService(event_store, reports, None, holder="patient", lease_ttl_s=3)
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        with caplog.at_level(logging.WARNING, logger="scheduler.service"):
            await eventually(
                lambda: "cannot reach the lease yet" in caplog.text,
                what="the scheduler saying it cannot reach the lease",
                within=60,
            )
        assert not task.done(), "the scheduler ended while JetStream did not answer"
        await asyncio.to_thread(hub_nats.server.start)
        await eventually(lambda: scheduler.ready.is_set(), what="the scheduler ready", within=60)
        await event_store.append([published(make_taskset("web"), 1, clusters=["a"])])
        await eventually(lambda: _is(event_store, ["a"], {"a": 1}), what="the taskset scheduled")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)
