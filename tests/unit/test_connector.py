"""The connector service against in-memory ports: feed, simulated cluster, outbox, inventory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest

from edge_connector.connector import Connector, ConnectorSettings, Delivery, HeldTasks
from edge_connector.errors import ApplyFailed, ConnectorError, EdgeUnavailable
from edge_connector.executor import ApplyResult, ExecutorInventory
from edge_connector.health import NO_CONTROLLER, HubLinkState
from events.catalog import DriftCorrected, DriftDetected, Report, TaskApplied, TaskFailed
from events.errors import EventLogUnavailable
from events.inventory import ControllerStatus, InventoryDigest
from simulator.executor import SimExecutor
from taskset.digest import digest_of
from taskset.model import ClusterTask, Step, Taskset
from tests.eventually import eventually

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def web(replicas: int = 1, **options: object) -> Taskset:
    return Taskset(
        name="web",
        install=[
            Step(
                object={
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "apps"},
                    "spec": {"replicas": replicas},
                }
            )
        ],
        **options,  # type: ignore[arg-type]
    )


def task(taskset: Taskset, generation: int = 1, removed: bool = False) -> ClusterTask:
    return ClusterTask(
        cluster="alpha",
        taskset_name=taskset.name,
        version=generation,
        generation=generation,
        digest=digest_of(taskset),
        taskset=taskset,
        removed=removed,
    )


class QueueFeed:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[ClusterTask | None] = asyncio.Queue()
        self.acked = 0
        self.breaks = 0

    async def deliveries(self) -> AsyncIterator[Delivery]:
        while True:
            task = await self.queue.get()
            if task is None:
                self.breaks += 1
                raise EdgeUnavailable("feed broke")

            async def ack() -> None:
                self.acked += 1

            yield Delivery(subject=f"fleet.desired.alpha.{task.taskset_name}", task=task, ack=ack)


class ListOutbox:
    def __init__(self, failures: int = 0) -> None:
        self.events: list[Report] = []
        self.failures = failures

    async def append(self, event: Report) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise EventLogUnavailable("outbox away")
        self.events.append(event)


class ListInventory:
    def __init__(self) -> None:
        self.sent: list[InventoryDigest] = []

    async def publish(self, inventory: InventoryDigest) -> None:
        self.sent.append(inventory)


class Rig:
    def __init__(self, outbox_failures: int = 0) -> None:
        self.feed = QueueFeed()
        self.sim = SimExecutor(name="alpha", clock=lambda: NOW)
        self.outbox = ListOutbox(outbox_failures)
        self.inventory = ListInventory()
        self.connector = Connector(
            settings=ConnectorSettings(
                cluster="alpha", inventory_interval=0.01, retry_base=0.01, outbox_retry_max=0.02
            ),
            feed=self.feed,
            executor=self.sim,
            reports=self.outbox,
            inventory_sink=self.inventory,
            clock=lambda: NOW,
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Rig:
        self.task = asyncio.create_task(self.connector.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def of(self, kind: type[Report]) -> list[Report]:
        return [e for e in self.outbox.events if isinstance(e, kind)]


async def test_a_delivered_task_is_applied_acknowledged_and_reported() -> None:
    async with Rig() as rig:
        await rig.feed.queue.put(task(web()))
        await eventually(lambda: len(rig.of(TaskApplied)) == 1)
        assert rig.sim.applied["web"].generation == 1
        assert rig.feed.acked == 1


async def test_a_failed_apply_is_reported_once_and_retried_until_it_succeeds() -> None:
    async with Rig() as rig:
        rig.sim.fail("web", times=3, reason="quota exceeded")
        await rig.feed.queue.put(task(web()))
        await eventually(lambda: len(rig.of(TaskApplied)) == 1)
        failed = rig.of(TaskFailed)
        assert len(failed) == 1
        assert isinstance(failed[0], TaskFailed)
        assert failed[0].reason == "quota exceeded"


async def test_a_tombstone_removes_and_reports_the_removal() -> None:
    async with Rig() as rig:
        await rig.feed.queue.put(task(web()))
        await eventually(lambda: "web" in rig.sim.applied)
        await rig.feed.queue.put(task(web(), generation=2, removed=True))
        await eventually(lambda: any(getattr(e, "removed", False) for e in rig.of(TaskApplied)))
        assert rig.sim.objects == {}


async def test_drift_is_detected_corrected_and_both_are_reported() -> None:
    async with Rig() as rig:
        await rig.feed.queue.put(task(web(replicas=2)))
        await eventually(lambda: "web" in rig.sim.applied)
        rig.sim.edit("Deployment/apps/web", "/spec/replicas", 7)
        await eventually(lambda: len(rig.of(DriftCorrected)) == 1)
        assert rig.sim.objects["Deployment/apps/web"].manifest["spec"]["replicas"] == 2
        detected = rig.of(DriftDetected)
        assert len(detected) == 1
        assert rig.of(DriftCorrected)[0].causation_id == detected[0].id


async def test_drift_on_an_ignored_path_is_left_alone() -> None:
    async with Rig() as rig:
        await rig.feed.queue.put(task(web(ignore_paths=["/spec/replicas"])))
        await eventually(lambda: "web" in rig.sim.applied)
        rig.sim.edit("Deployment/apps/web", "/spec/replicas", 7)
        rig.sim.delete("Deployment/apps/web")
        await eventually(lambda: len(rig.of(DriftCorrected)) == 1)
        assert [e.deleted for e in rig.of(DriftDetected)] == [True]  # type: ignore[attr-defined]


async def test_reports_wait_in_order_while_the_outbox_is_unavailable() -> None:
    async with Rig(outbox_failures=5) as rig:
        await rig.feed.queue.put(task(web()))
        await rig.feed.queue.put(task(web(replicas=3), generation=2))
        await eventually(lambda: len(rig.of(TaskApplied)) >= 1 and rig.outbox.failures == 0)
        await eventually(lambda: rig.sim.applied["web"].generation == 2)
        await eventually(lambda: rig.connector.reported == len(rig.outbox.events))
        generations = [e.generation for e in rig.of(TaskApplied)]
        assert generations == sorted(generations)


async def test_the_feed_is_followed_again_after_it_breaks() -> None:
    async with Rig() as rig:
        await rig.feed.queue.put(None)
        await rig.feed.queue.put(task(web()))
        await eventually(lambda: "web" in rig.sim.applied)
        assert rig.feed.breaks == 1


async def test_inventory_digests_say_what_is_held_and_applied() -> None:
    async with Rig() as rig:
        await rig.feed.queue.put(task(web()))
        await eventually(lambda: any("web" in d.applied for d in rig.inventory.sent))
        latest = rig.inventory.sent[-1]
        assert latest.cluster == "alpha"
        assert latest.desired["web"].generation == 1
        assert latest.objects == 1


async def test_a_cluster_that_lost_its_state_is_reconciled_from_what_is_held() -> None:
    async with Rig() as rig:
        await rig.feed.queue.put(task(web()))
        await eventually(lambda: "web" in rig.sim.applied)
        rig.sim.wipe()
        await eventually(lambda: "web" in rig.sim.applied)
        assert len(rig.of(TaskApplied)) == 2


class CountingSim(SimExecutor):
    """A simulated cluster whose applies take a moment and count who is applying at once."""

    def __init__(self) -> None:
        super().__init__(name="alpha", clock=lambda: NOW)
        self.active: dict[str, int] = {}
        self.most_per_taskset = 0
        self.most_at_once = 0

    async def apply(self, task: ClusterTask) -> ApplyResult:
        name = task.taskset_name
        self.active[name] = self.active.get(name, 0) + 1
        self.most_per_taskset = max(self.most_per_taskset, self.active[name])
        self.most_at_once = max(self.most_at_once, sum(self.active.values()))
        try:
            await asyncio.sleep(0.005)
            return await super().apply(task)
        finally:
            self.active[name] -= 1


async def test_one_taskset_is_worked_on_by_one_worker_at_a_time_and_at_most_four_at_once() -> None:
    async with Rig() as rig:
        sim = CountingSim()
        rig.connector.executor = sim
        rig.sim = sim
        await rig.feed.queue.put(task(web(replicas=2)))
        await eventually(lambda: "web" in sim.applied)

        # A drift correction and two newer desired states arrive together, beside ten others.
        sim.edit("Deployment/apps/web", "/spec/replicas", 7)
        await rig.feed.queue.put(task(web(replicas=3), generation=2))
        await rig.feed.queue.put(task(web(replicas=4), generation=3))
        for n in range(10):
            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"app-{n}", "namespace": "apps"},
            }
            other = Taskset(name=f"app-{n}", install=[Step(object=deployment)])
            await rig.feed.queue.put(task(other))

        await eventually(lambda: sim.applied["web"].generation == 3)
        await eventually(lambda: all(f"app-{n}" in sim.applied for n in range(10)))
        assert sim.most_per_taskset == 1
        assert 1 < sim.most_at_once <= 4
        assert sim.objects["Deployment/apps/web"].manifest["spec"]["replicas"] == 4


class ControlledSim(SimExecutor):
    """A simulated cluster with a separate controller whose Tasks cannot be listed yet."""

    def __init__(self) -> None:
        super().__init__(name="alpha", clock=lambda: NOW)
        self.listing_fails = True

    async def inventory(self) -> ExecutorInventory:
        if self.listing_fails:
            raise ApplyFailed(phase="init", object="Task", reason="cannot list Tasks")
        return await super().inventory()

    async def controller_status(self) -> ControllerStatus:  # type: ignore[override]
        return ControllerStatus(ready=False, reason=NO_CONTROLLER)


class Linked:
    async def state(self) -> HubLinkState:
        return HubLinkState(connected=True, detail="hub")


async def test_digests_carry_the_controllers_health_even_while_the_cluster_cannot_be_listed() -> (
    None
):
    async with Rig() as rig:
        sim = ControlledSim()
        rig.connector.executor = sim
        rig.connector.hub_link = Linked()
        await eventually(lambda: len(rig.inventory.sent) >= 2)
        latest = rig.inventory.sent[-1]
        assert latest.edge is not None
        assert latest.edge.controller == ControllerStatus(ready=False, reason=NO_CONTROLLER)
        assert latest.applied == {}
        assert rig.connector.controller == latest.edge.controller

        await rig.feed.queue.put(task(web()))
        await eventually(lambda: "web" in rig.connector.held)
        sim.listing_fails = False
        await eventually(lambda: "web" in sim.applied)
        await eventually(lambda: any("web" in d.applied for d in rig.inventory.sent))


class SwitchedLink:
    """A hub link the test connects and cuts; counts how often readiness looked at it."""

    def __init__(self, connected: bool = False, *, flapping: bool = False) -> None:
        self.connected = connected
        self.flapping = flapping
        self.looks = 0

    async def state(self) -> HubLinkState:
        self.looks += 1
        if self.flapping:
            self.connected = not self.connected
        return HubLinkState(connected=self.connected, detail="hub")


class SwitchedControllerSim(SimExecutor):
    """A simulated cluster whose separate controller the test starts."""

    def __init__(self) -> None:
        super().__init__(name="alpha", clock=lambda: NOW)
        self.status = ControllerStatus(ready=False, reason=NO_CONTROLLER)
        self.unreachable = False

    async def controller_status(self) -> ControllerStatus:  # type: ignore[override]
        if self.unreachable:
            raise EdgeUnavailable("the Kubernetes API does not answer")
        return self.status


def hourly(rig: Rig, *, min_send_gap: float = 0.01) -> None:
    """Regular digests only once an hour: any other digest was sent on a change."""
    rig.connector.settings = ConnectorSettings(
        cluster="alpha",
        inventory_interval=3600.0,
        retry_base=0.01,
        outbox_retry_max=0.02,
        readiness_check_interval=0.01,
        min_send_gap=min_send_gap,
    )


def told(rig: Rig) -> list[tuple[bool, bool | None]]:
    said = []
    for digest in rig.inventory.sent:
        assert digest.edge is not None
        controller = digest.edge.controller
        said.append((digest.edge.ready, controller.ready if controller is not None else None))
    return said


async def test_the_hub_is_told_at_once_when_the_connector_turns_ready_and_not_ready() -> None:
    link = SwitchedLink(connected=False)
    rig = Rig()
    hourly(rig)
    rig.connector.hub_link = link
    async with rig:
        await eventually(lambda: told(rig) == [(False, None)], "the first digest: not ready")
        link.connected = True
        await eventually(lambda: told(rig)[-1:] == [(True, None)], "ready told at once")
        link.connected = False
        await eventually(lambda: told(rig)[-1:] == [(False, None)], "not ready told at once")
        assert told(rig) == [(False, None), (True, None), (False, None)]
        # No change, no digest: readiness keeps being checked, nothing more is sent.
        looked = link.looks
        await eventually(lambda: link.looks >= looked + 20, "readiness checked again")
        assert len(rig.inventory.sent) == 3


async def test_the_hub_is_told_at_once_when_a_separate_controller_turns_ready() -> None:
    sim = SwitchedControllerSim()
    rig = Rig()
    hourly(rig)
    rig.connector.executor = sim
    rig.connector.hub_link = SwitchedLink(connected=True)
    async with rig:
        await eventually(lambda: told(rig) == [(True, False)], "the first digest")
        sim.status = ControllerStatus(ready=True, reason="controller a: watches synced")
        await eventually(lambda: told(rig)[-1:] == [(True, True)], "the controller ready told")
        assert rig.connector.controller == sim.status


async def test_a_flapping_readiness_is_sent_no_more_than_once_per_gap() -> None:
    link = SwitchedLink(connected=False)
    rig = Rig()
    hourly(rig, min_send_gap=3600.0)
    rig.connector.hub_link = link
    async with rig:
        await eventually(lambda: len(rig.inventory.sent) == 1, "the first digest")
        link.flapping = True
        looked = link.looks
        await eventually(lambda: link.looks >= looked + 40, "readiness changing many times")
        assert len(rig.inventory.sent) == 1, "nothing more within the gap"


async def test_after_a_flapping_readiness_the_hub_hears_the_state_it_settled_in() -> None:
    link = SwitchedLink(connected=False)
    rig = Rig()
    hourly(rig, min_send_gap=0.2)
    rig.connector.hub_link = link
    async with rig:
        await eventually(lambda: len(rig.inventory.sent) == 1, "the first digest")
        link.flapping = True
        looked = link.looks
        await eventually(lambda: link.looks >= looked + 40, "readiness changing many times")
        link.flapping = False
        link.connected = True
        await eventually(lambda: told(rig)[-1:] == [(True, None)], "the last state told")
        link.connected = False
        await eventually(lambda: told(rig)[-1:] == [(False, None)], "and the next")


async def test_a_readiness_that_cannot_be_checked_is_logged_once_and_checked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SwitchedControllerSim()
    rig = Rig()
    hourly(rig)
    rig.connector.executor = sim
    link = SwitchedLink(connected=True)
    rig.connector.hub_link = link
    async with rig:
        await eventually(lambda: told(rig) == [(True, False)], "the first digest")
        sim.unreachable = True
        looked = link.looks
        await eventually(lambda: link.looks >= looked + 20, "readiness checked again and again")
        warned = [r for r in caplog.records if "readiness not checked" in r.getMessage()]
        assert len(warned) == 1
        assert "the Kubernetes API does not answer" in warned[0].getMessage()
        assert rig.task is not None
        assert not rig.task.done(), "the connector keeps running"
        sim.unreachable = False
        sim.status = ControllerStatus(ready=True, reason="controller a: watches synced")
        await eventually(lambda: told(rig)[-1:] == [(True, True)], "the change told once readable")


def test_held_tasks_keep_what_deciding_needs_and_give_the_whole_task_back() -> None:
    held = HeldTasks()
    whole = task(web(3, drift_policy="report", ignore_paths=["/spec/replicas"]), generation=4)
    compact = held.hold(whole)
    assert held["web"] is compact
    assert compact.taskset is not None
    assert compact.taskset.install == []
    assert (compact.taskset.drift_policy, compact.taskset.ignore_paths) == (
        "report",
        ["/spec/replicas"],
    )
    assert (compact.generation, compact.digest) == (whole.generation, whole.digest)
    assert held.whole(compact) == whole
    assert len(msgspec.json.encode(compact)) < len(msgspec.json.encode(whole))


def test_held_tasks_refuse_the_whole_task_of_one_no_longer_held() -> None:
    held = HeldTasks()
    first = held.hold(task(web(1)))
    second = held.hold(task(web(2), generation=2))
    assert held.whole(second).generation == 2
    with pytest.raises(ConnectorError, match="web: not the ClusterTask held"):
        held.whole(first)
    tombstone = held.hold(task(web(2), generation=3, removed=True))
    assert held.whole(tombstone).removed


async def test_the_log_follows_the_readiness_the_hub_is_told_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = SwitchedLink(connected=False)
    rig = Rig()
    hourly(rig, min_send_gap=0.2)
    rig.connector.hub_link = link
    caplog.set_level(logging.INFO, logger="edge_connector.connector")

    def lines() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith("edge readiness told to the hub")
        ]

    async with rig:
        await eventually(lambda: len(rig.inventory.sent) == 1, "the first digest")
        assert lines() == [
            "edge readiness told to the hub: connector not ready (not connected to the hub: hub)"
        ]
        link.flapping = True
        looked = link.looks
        await eventually(lambda: link.looks >= looked + 40, "readiness changing many times")
        link.flapping = False
        link.connected = True
        await eventually(lambda: told(rig)[-1:] == [(True, None)], "the last state told")
        said = told(rig)
        changes = [now for before, now in zip([None, *said], said, strict=False) if now != before]
        assert len(lines()) == len(changes), "one line per change the hub heard, no more"
        assert lines()[-1] == (
            "edge readiness told to the hub: connector ready "
            "(connected to the hub (hub) and caught up)"
        )
