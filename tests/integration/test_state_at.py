"""`state --at T`: the desired state of a cluster at past moments, recomputed from the log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from events.store import EventStore
from scheduler.history import desired_state_at
from taskset.model import ClusterTask
from tests.eventually import eventually
from tests.integration.scheduler_harness import (
    FakeChartRenderer,
    desired,
    running_scheduler,
)
from tests.scheduler_fixtures import (
    deployment,
    make_taskset,
    override_removed,
    patch_override,
    published,
    registered,
    relabelled,
    values_override,
)


async def test_state_at_gives_the_desired_state_of_each_past_moment(
    event_store: EventStore,
) -> None:
    await event_store.append([registered("a", env="prod"), registered("b", env="prod")])
    moments: list[tuple[datetime, dict[str, ClusterTask]]] = []

    async def settle_and_remember(expected_generation: dict[str, int]) -> None:
        async def settled() -> bool:
            for taskset, generation in expected_generation.items():
                task = await desired(event_store, "a", taskset)
                if task is None or task.generation != generation:
                    return False
            return True

        await eventually(settled, what=f"generations {expected_generation}")
        held = {}
        for taskset in expected_generation:
            task = await desired(event_store, "a", taskset)
            assert task is not None
            if not task.removed:
                held[taskset] = task
        await asyncio.sleep(0.01)  # the moment is strictly after what it remembers
        moments.append((datetime.now(UTC), held))
        await asyncio.sleep(0.01)

    async with running_scheduler(event_store):
        await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])
        await settle_and_remember({"web": 1})
        await event_store.append(
            [patch_override("web", "three", "web", {"spec": {"replicas": 3}}, selector="env")]
        )
        await settle_and_remember({"web": 2})
        await event_store.append(
            [
                published(make_taskset("web", deployment("web", 5)), 2, selector="env=prod"),
                published(
                    make_taskset("api", helm=True), 1, clusters=["a"], values={"replicas": 1}
                ),
            ]
        )
        await settle_and_remember({"web": 3, "api": 1})
        await event_store.append([values_override("api", "big", {"replicas": 9}, cluster="a")])
        await settle_and_remember({"web": 3, "api": 2})
        await event_store.append([override_removed("web", "three")])
        await settle_and_remember({"web": 4, "api": 2})
        await event_store.append([relabelled("a", env="dev")])
        await settle_and_remember({"web": 5, "api": 2})

    for moment, held in moments:
        state = await desired_state_at(event_store.read(until=moment), "a", FakeChartRenderer())
        got = {entry.task.taskset_name: entry for entry in state.tasks}
        assert sorted(got) == sorted(held), moment
        for name, task in held.items():
            assert got[name].verified, got[name].problem
            assert got[name].task == task
    assert len(moments) == 6
