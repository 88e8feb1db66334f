"""Placement and scheduling decisions, driven purely: fold events, decide, fold the decisions."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from datetime import datetime, timedelta

from events.catalog import (
    SCHEDULE_CHUNK,
    ClusterTaskRefused,
    ClusterTaskScheduled,
    Event,
    Placement,
    RolloutAdvanced,
    RolloutHalted,
    RolloutResumed,
    RolloutStrategy,
)
from events.edges import report_origin
from events.ids import new_event_id
from scheduler.blueprint_rollout import decide_blueprint_rollout
from scheduler.bus import Delivered
from scheduler.decide import DesiredWrite, decide_taskset
from scheduler.materialize import Materializer
from scheduler.placement import place_taskset
from scheduler.service import coalesced, execution_batches, subject_rounds
from scheduler.state import SchedulerState
from taskset.model import ClusterTask
from tests.scheduler_fixtures import (
    T0,
    ReplicasRenderer,
    ScheduledFact,
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
    retired,
    scheduled_facts,
    values_override,
)


class Harness:
    """The scheduler's loop without I/O: the log is a list, DESIRED a dict."""

    def __init__(self, limit: int | None = None) -> None:
        self.state = SchedulerState()
        self.renderer = ReplicasRenderer()
        self.materialize = (
            Materializer(self.renderer)
            if limit is None
            else Materializer(self.renderer, limit=limit)
        )
        self.seq = itertools.count(1)
        self.log: list[Event] = []
        self.desired: dict[str, ClusterTask] = {}
        self.writes: list[DesiredWrite] = []
        self.now = T0

    def append(self, *events: Event) -> None:
        for event in events:
            self.log.append(event)
            self.state.apply_event(next(self.seq), event.subject, self.now, event)
        self.decide()

    def report(self, *reports: Event) -> None:
        for report in reports:
            self.state.apply_report(next(self.seq), self.now, report)
        self.decide()

    def decide(self) -> None:
        for blueprint in sorted(self.state.blueprints):
            step = decide_blueprint_rollout(self.state, blueprint, self.now, new_event_id)
            for event in step.events:
                self.log.append(event)
                self.state.apply_event(next(self.seq), event.subject, self.now, event)
        for name in self.state.taskset_names():
            stored = {s: t.generation for s, t in self.desired.items()}
            decision = decide_taskset(
                self.state, name, self.now, self.materialize, new_event_id, stored
            )
            for event in decision.events:
                self.log.append(event)
                self.state.apply_event(next(self.seq), event.subject, self.now, event)
            for write in decision.writes:
                self.writes.append(write)
                self.desired[write.subject] = write.task

    def task(self, cluster: str, taskset: str = "web") -> ClusterTask | None:
        return self.desired.get(f"fleet.desired.{cluster}.{taskset}")

    def scheduled(self) -> list[ScheduledFact]:
        """Every cluster's new desired state, in the order the log records them."""
        return scheduled_facts(self.log)


def live(h: Harness, taskset: str = "web") -> dict[str, int]:
    """cluster -> version it should run now (tombstones left out)."""
    out = {}
    for task in h.desired.values():
        if task.taskset_name == taskset and not task.removed:
            out[task.cluster] = task.version
    return out


def test_placement_is_explicit_names_plus_selector_matches_among_registered_clusters() -> None:
    clusters = {"a": {"env": "prod"}, "b": {"env": "dev"}, "c": {"env": "prod"}}
    assert place_taskset(Placement(selector="env=prod"), clusters, taskset="web") == ["a", "c"]
    assert place_taskset(Placement(clusters=["b", "ghost"]), clusters, taskset="web") == ["b"]
    assert place_taskset(
        Placement(clusters=["b"], selector="env=prod"), clusters, taskset="web"
    ) == [
        "a",
        "b",
        "c",
    ]
    assert place_taskset(Placement(), clusters, taskset="web") == []


def test_a_taskset_is_placed_only_on_clusters_of_its_own_project() -> None:
    clusters = {
        "east": {"env": "prod"},
        "team-a--east": {"env": "prod"},
        "team-b--east": {"env": "prod"},
    }
    selected = Placement(selector="env=prod", clusters=["team-b--east", "east"])
    assert place_taskset(selected, clusters, taskset="team-a--web") == ["team-a--east"]
    assert place_taskset(selected, clusters, taskset="web") == ["east"]
    assert place_taskset(selected, clusters, taskset="team-b--web") == ["team-b--east"]


def test_a_label_change_adds_and_removes_clusters_with_a_tombstone() -> None:
    h = Harness()
    h.append(registered("a", env="prod"), registered("b", env="dev"))
    h.append(published(make_taskset("web"), 1, selector="env=prod"))
    assert live(h) == {"a": 1}
    h.append(relabelled("b", env="prod"))
    assert live(h) == {"a": 1, "b": 1}
    h.append(relabelled("a", env="dev"))
    assert live(h) == {"b": 1}
    tombstone = h.task("a")
    assert tombstone is not None
    assert tombstone.removed
    assert tombstone.taskset is None
    assert tombstone.generation == 2


def test_nothing_is_rewritten_when_a_change_does_not_touch_a_cluster() -> None:
    h = Harness()
    h.append(registered("a", env="prod"), registered("b", env="prod"))
    h.append(published(make_taskset("web"), 1, selector="env=prod"))
    before = len(h.writes)
    h.append(registered("c", env="dev"), relabelled("a", env="prod", tier="web"))
    h.append(patch_override("web", "more", "web", {"spec": {"replicas": 3}}, cluster="b"))
    assert [w.task.cluster for w in h.writes[before:]] == ["b"]
    first_b, second_b = [e for e in h.scheduled() if e.cluster == "b"]
    assert (first_b.generation, second_b.generation) == (1, 2)
    assert second_b.overrides == ["more"]
    assert second_b.digest != first_b.digest


def test_retiring_removes_everywhere_and_deregistering_forgets_the_cluster() -> None:
    h = Harness()
    h.append(registered("a"), registered("b"))
    h.append(published(make_taskset("web"), 1, clusters=["a", "b"]))
    h.append(deregistered("b"))
    assert [e.cluster for e in h.scheduled()] == ["a", "b"]
    h.append(retired("web"))
    removals = [e for e in h.scheduled() if e.removed]
    assert [(e.cluster, e.generation) for e in removals] == [("a", 2)]


def test_a_cluster_registered_again_continues_its_generations() -> None:
    h = Harness()
    h.append(registered("a"))
    h.append(published(make_taskset("web"), 1, clusters=["a"]))
    h.append(deregistered("a"))
    h.append(registered("a"))
    assert [e.generation for e in h.scheduled()] == [1, 2]


def test_values_overrides_rerender_helm_tasksets_for_the_matching_clusters() -> None:
    h = Harness()
    h.append(registered("a", env="prod"), registered("b", env="dev"))
    h.append(
        published(make_taskset("web", helm=True), 1, clusters=["a", "b"], values={"replicas": 1})
    )
    h.append(values_override("web", "big", {"replicas": 5}, selector="env=prod"))
    task_a, task_b = h.task("a"), h.task("b")
    assert task_a is not None
    assert task_b is not None
    assert task_a.taskset is not None
    assert task_a.taskset.install[0].object["spec"]["replicas"] == 5
    assert task_b.generation == 1
    assert h.renderer.calls == 1


def test_an_override_over_the_size_limit_is_refused_once_and_the_cluster_keeps_its_task() -> None:
    h = Harness(limit=2000)
    h.append(registered("a"), registered("b"))
    h.append(published(make_taskset("web", config_map("web")), 1, clusters=["a", "b"]))
    noise = {str(i): hashlib.sha256(str(i).encode()).hexdigest() for i in range(200)}
    h.append(patch_override("web", "huge", "web", {"data": noise}, cluster="a", kind="ConfigMap"))
    refusals = [e for e in h.log if isinstance(e, ClusterTaskRefused)]
    assert [r.cluster for r in refusals] == ["a"]
    assert "over the limit of 2,000 bytes" in refusals[0].reason
    task_a = h.task("a")
    assert task_a is not None
    assert task_a.generation == 1
    h.append(registered("c"))
    assert len([e for e in h.log if isinstance(e, ClusterTaskRefused)]) == 1


def test_waves_advance_on_reports_and_halt_on_failures_until_resumed() -> None:
    h = Harness()
    h.append(*(registered(c, env="prod") for c in "abcde"))
    strategy = RolloutStrategy(batch_size=2, pause_seconds=60)
    h.append(published(make_taskset("web"), 1, selector="env=prod"))
    h.report(*(applied(c, "web", 1, 1) for c in "abcde"))
    h.append(
        published(
            make_taskset("web", deployment("web", 2)), 2, selector="env=prod", rollout=strategy
        )
    )
    assert live(h) == {"a": 2, "b": 2, "c": 1, "d": 1, "e": 1}
    h.report(applied("a", "web", 2, 2))
    assert live(h)["c"] == 1
    h.report(applied("b", "web", 2, 2))
    assert live(h)["c"] == 1, "the pause is not over yet"
    h.now = T0 + timedelta(seconds=60)
    h.decide()
    assert live(h) == {"a": 2, "b": 2, "c": 2, "d": 2, "e": 1}
    h.report(failed("c", "web", 2, 2))
    halted = [e for e in h.log if isinstance(e, RolloutHalted)]
    assert [(e.wave, e.failed) for e in halted] == [(1, ["c"])]
    h.report(applied("d", "web", 2, 2))
    h.now += timedelta(seconds=120)
    h.decide()
    assert live(h)["e"] == 1, "a halted rollout does not advance"
    h.append(
        RolloutResumed(
            id=new_event_id(), occurred_at=h.now, actor="user:ops", taskset="web", taskset_version=2
        )
    )
    h.now += timedelta(seconds=61)
    h.decide()
    assert live(h)["e"] == 2
    waves = [
        (e.wave, e.clusters, e.total_waves)
        for e in h.log
        if isinstance(e, RolloutAdvanced) and e.taskset_version == 2
    ]
    assert waves == [(0, ["a", "b"], 3), (1, ["c", "d"], 3), (2, ["e"], 3)]


def test_decisions_name_their_causes() -> None:
    h = Harness()
    h.append(registered("a"))
    publish = published(make_taskset("web"), 1, clusters=["a"])
    h.append(publish)
    (scheduled,) = [e for e in h.log if isinstance(e, ClusterTaskScheduled)]
    assert scheduled.names() == ["a"]
    assert publish.id in scheduled.caused_by
    assert scheduled.causation_id == publish.id
    assert scheduled.actor == "scheduler"


def test_a_report_from_another_clusters_outbox_is_not_believed() -> None:
    assert report_origin("", {"Nats-Stream-Source": "REPORTS-edge-2 17 > >"}) == "edge-2"
    assert report_origin("", None) is None
    state = SchedulerState()
    forged = applied("edge-1", "web", 1, 1)
    assert state.apply_report(1, T0, forged, {"Nats-Stream-Source": "REPORTS-edge-2 1"}) == set()
    assert state.reports == {}
    assert state.apply_report(2, T0, forged, {"Nats-Stream-Source": "REPORTS-edge-1 2"}) == {"web"}


def test_a_report_a_client_cluster_published_under_its_own_subject_cannot_claim_another() -> None:
    state = SchedulerState()
    forged = applied("edge-1", "web", 1, 1)
    assert state.apply_report(1, T0, forged, None, "fleet.report.edge-2.web") == set()
    assert state.reports == {}
    assert state.apply_report(2, T0, forged, None, "fleet.report.edge-1.web") == {"web"}


def test_replaying_the_log_gives_the_same_state_and_no_new_decision() -> None:
    h = Harness()
    h.append(registered("a", env="prod"), registered("b", env="prod"))
    h.append(
        published(
            make_taskset("web"), 1, selector="env=prod", rollout=RolloutStrategy(batch_size=1)
        )
    )
    h.report(applied("a", "web", 1, 1))
    h.append(patch_override("web", "x", "web", {"spec": {"replicas": 2}}, cluster="a"))
    replay = Harness()
    for event in h.log:
        replay.state.apply_event(next(replay.seq), event.subject, T0, event)
    replay.state.apply_report(next(replay.seq), T0, applied("a", "web", 1, 1))
    stored = {s: t.generation for s, t in h.desired.items()}
    for name in replay.state.taskset_names():
        decision = decide_taskset(replay.state, name, T0, replay.materialize, new_event_id, stored)
        assert decision.events == []
        assert decision.writes == []


def test_a_desired_write_lost_after_its_event_is_written_again_at_the_same_generation() -> None:
    h = Harness()
    h.append(registered("a"))
    h.append(published(make_taskset("web"), 1, clusters=["a"]))
    decision = decide_taskset(h.state, "web", T0, h.materialize, new_event_id, {})
    assert decision.events == []
    assert [(w.task.cluster, w.task.generation) for w in decision.writes] == [("a", 1)]


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_decision_records_one_scheduled_event_per_chunk_of_clusters() -> None:
    h = Harness()
    names = [f"c{i:04d}" for i in range(SCHEDULE_CHUNK + 88)]
    h.append(*(registered(name, env="prod") for name in names))
    publish = published(make_taskset("web"), 1, selector="env=prod")
    h.state.apply_event(next(h.seq), publish.subject, h.now, publish)
    decision = decide_taskset(h.state, "web", h.now, h.materialize, new_event_id, {})

    chunks = [e for e in decision.events if isinstance(e, ClusterTaskScheduled)]
    assert [len(e.clusters) for e in chunks] == [SCHEDULE_CHUNK, 88]
    assert [name for e in chunks for name in e.names()] == names
    assert {e.subject for e in chunks} == {"fleet.evt.schedule.web"}
    assert len({e.id for e in chunks}) == 2
    written = {w.task.cluster: (w.task.generation, w.task.digest) for w in decision.writes}
    assert {
        part.cluster: (part.generation, part.digest) for e in chunks for part in e.clusters
    } == written


def test_a_decision_executes_in_batches_each_chunk_with_the_writes_of_its_clusters() -> None:
    h = Harness()
    names = [f"c{i:04d}" for i in range(SCHEDULE_CHUNK + 3)]
    h.append(*(registered(name, env="prod") for name in names))
    publish = published(make_taskset("web"), 1, selector="env=prod")
    h.state.apply_event(next(h.seq), publish.subject, h.now, publish)
    decision = decide_taskset(h.state, "web", h.now, h.materialize, new_event_id, {})
    lost = DesiredWrite(
        ClusterTask(cluster="z", taskset_name="web", version=1, generation=1, digest="")
    )
    loose, batches = execution_batches(decision.events, [*decision.writes, lost], size=2)

    assert [type(e) for e in loose] == [RolloutAdvanced]
    (first_events, first_writes), (second_events, second_writes), (rest_events, rest_writes) = (
        batches
    )
    for events, writes in ((first_events, first_writes), (second_events, second_writes)):
        (chunk,) = events
        assert isinstance(chunk, ClusterTaskScheduled)
        assert [w.task.cluster for w in writes] == chunk.names()
    assert (rest_events, rest_writes) == ([], [lost])
    every = [w.subject for _, writes in batches for w in writes]
    assert sorted(every) == sorted(w.subject for w in [*decision.writes, lost])


def test_events_on_one_subject_go_in_successive_rounds_in_their_order() -> None:
    a1, b1, a2, c1, a3 = (registered(n) for n in ("a", "b", "a", "c", "a"))
    rounds = subject_rounds([a1, b1, a2, c1, a3])
    assert rounds == [[a1, b1, c1], [a2], [a3]]
    assert subject_rounds([]) == []


def _delivered(seq: int) -> Delivered:
    return Delivered(
        stream="REPORTS",
        seq=seq,
        subject="fleet.report.a.web",
        stored_at=T0,
        event=None,
        headers=None,
    )


async def test_batches_waiting_behind_one_are_handled_with_it_up_to_a_limit() -> None:
    queue: asyncio.Queue[list[Delivered]] = asyncio.Queue()
    for start in (3, 5, 7):
        queue.put_nowait([_delivered(start), _delivered(start + 1)])
    taken = coalesced([_delivered(1), _delivered(2)], queue, limit=5)
    assert [d.seq for d in taken] == [1, 2, 3, 4, 5, 6]
    assert [d.seq for d in queue.get_nowait()] == [7, 8]
    assert [d.seq for d in coalesced([_delivered(9)], queue)] == [9]
