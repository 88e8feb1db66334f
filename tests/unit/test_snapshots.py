"""Snapshot parts, pure: a fold cut anywhere, snapshotted, restored and continued equals the
fold of the whole log; parts of another schema or garbage are refused by name."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from events.catalog import Event, RolloutStrategy
from events.replay import StoredEvent
from scheduler.history import HistoryFold, desired_state_at
from scheduler.snapshots import (
    SNAPSHOT_SCHEMA,
    ClusterHistory,
    SnapshotUnreadable,
    decisions_part,
    history_fold_from,
    pack,
    placement_part,
    read_decisions,
    read_history,
    read_placement,
    restore_history,
    restore_state,
    snapshot_parts,
    state_digest,
)
from scheduler.state import SchedulerState
from sealing.envelope import cluster_scope, is_sealed_bytes
from sealing.keyring import Keyring
from tests.scheduler_fixtures import (
    T0,
    applied,
    deregistered,
    failed,
    override_removed,
    patch_override,
    registered,
    relabelled,
)
from tests.unit.test_blueprint_scheduling import blueprint, entry, three_tasksets
from tests.unit.test_placement import Harness

COVERED = {
    "draining",
    "releases",
    "capabilities",
    "resealed",
    "shredded",
    "clusters",
    "deregistered",
    "tasksets",
    "overrides",
    "scheduled",
    "generations",
    "refused",
    "rollouts",
    "reports",
    "subject_seqs",
    "causes",
    "last_cause",
    "global_causes",
    "blueprints",
    "blueprint_assignments",
    "taskset_dependencies",
    "held",
    "blueprint_rollouts",
    "blueprint_started",
    "blueprint_reached",
    "forced",
    "events_seq",
    "reports_seq",
}


def a_busy_fleet() -> tuple[list[Event], list[tuple[int, Event]]]:
    """A log with blueprints in waves, holds, a failure, overrides set and removed, a relabel
    and a deregistration; the reports with the log position they came after."""
    h = Harness()
    reports: list[tuple[int, Event]] = []

    def report(*events: Event) -> None:
        reports.extend((len(h.log), event) for event in events)
        h.report(*events)

    three_tasksets(h)
    h.append(blueprint(1, entry("crds", version=1), entry("app", "crds")))
    h.append(
        registered("c1", env="prod"), registered("c2", env="prod"), registered("c3", env="dev")
    )
    report(applied("c1", "crds", 1, 1), applied("c2", "crds", 1, 1))
    h.append(patch_override("app", "big", "app", {"spec": {"replicas": 3}}, selector="env"))
    h.append(blueprint(2, entry("crds", version=2), rollout=RolloutStrategy(batch_size=1)))
    report(failed("c1", "crds", 2, 2))
    h.append(relabelled("c3", env="prod"))
    h.append(override_removed("app", "big"))
    h.append(deregistered("c2"))
    return h.log, reports


def fold(events: list[Event], reports: list[tuple[int, Event]], upto: int) -> SchedulerState:
    """The scheduler's rebuild of the first `upto` events: events, then the reports."""
    state = SchedulerState()
    for seq, event in enumerate(events[:upto], start=1):
        state.apply_event(seq, event.subject, T0, event)
    for seq, (_, event) in enumerate([r for r in reports if r[0] <= upto], start=1):
        state.apply_report(seq, T0, event)
    return state


def test_every_field_of_the_scheduler_state_is_in_a_snapshot() -> None:
    assert {f.name for f in dataclasses.fields(SchedulerState)} == COVERED


def test_a_snapshot_restores_the_state_it_was_taken_of() -> None:
    events, reports = a_busy_fleet()
    state = fold(events, reports, len(events))
    placement = read_placement(pack(placement_part(state)))
    decisions = read_decisions(pack(decisions_part(state)))
    restored = restore_state(placement, decisions)
    assert state_digest(restored) == state_digest(state)
    assert placement_part(restored) == placement_part(state)
    assert decisions_part(restored) == decisions_part(state)
    assert restored.blueprint_assignments or restored.blueprint_reached
    assert restored.reports
    assert restored.deregistered == {"c2"}


def test_a_fold_cut_anywhere_and_continued_from_the_snapshot_equals_the_whole_fold() -> None:
    events, reports = a_busy_fleet()
    whole = state_digest(fold(events, reports, len(events)))
    for cut in range(1, len(events)):
        state = fold(events, reports, cut)
        restored = restore_state(
            read_placement(pack(placement_part(state))),
            read_decisions(pack(decisions_part(state))),
        )
        for seq, event in enumerate(events[cut:], start=cut + 1):
            restored.apply_event(seq, event.subject, T0, event)
        later = [event for position, event in reports if position > cut]
        for seq, event in enumerate(later, start=restored.reports_seq + 1):
            restored.apply_report(seq, T0, event)
        assert state_digest(restored) == whole, cut


def stored(events: list[Event], start: int = 1) -> list[StoredEvent]:
    return [
        StoredEvent(seq=seq, subject=event.subject, stored_at=T0, event=event)
        for seq, event in enumerate(events, start=start)
    ]


async def replay(items: list[StoredEvent]) -> AsyncIterator[StoredEvent]:
    for item in items:
        yield item


async def test_history_from_a_snapshot_equals_the_history_of_the_whole_log() -> None:
    events, _ = a_busy_fleet()
    log = stored(events)
    for cut in (3, len(events) // 2, len(events) - 2):
        everyone = HistoryFold()
        for item in log[:cut]:
            await everyone.apply(item)
        parts = snapshot_parts(everyone.state, everyone)
        for cluster in ("c1", "c2", "c3"):
            history = (
                read_history(parts.histories[cluster], cluster)
                if cluster in parts.histories
                else None
            )
            start = history_fold_from(
                read_placement(parts.placement), T0, cluster, history, parts.contents, None
            )
            continued = await desired_state_at(replay(log[cut:]), cluster, start=start)
            whole = await desired_state_at(replay(log), cluster)
            assert continued == whole, (cut, cluster)


def test_a_part_of_another_schema_or_not_a_part_at_all_is_refused_by_name() -> None:
    state = SchedulerState()
    future = msgspec.structs.replace(placement_part(state), schema=SNAPSHOT_SCHEMA + 1)
    with pytest.raises(
        SnapshotUnreadable, match=f"placement part has schema {SNAPSHOT_SCHEMA + 1}"
    ):
        read_placement(pack(future))
    with pytest.raises(SnapshotUnreadable, match="the decisions part does not decode"):
        read_decisions(b"garbage")
    with pytest.raises(SnapshotUnreadable, match="the decisions part does not decode"):
        read_decisions(zlib.compress(b"\x81\xa1x\x01"))
    with pytest.raises(SnapshotUnreadable, match="the history of c1 holds c2's"):
        read_history(pack(ClusterHistory(schema=SNAPSHOT_SCHEMA, cluster="c2", tasks=[])), "c1")


async def test_a_sealing_hub_keeps_each_clusters_content_sealed_with_its_own_key(
    tmp_path: Path,
) -> None:
    keyring = Keyring.open(tmp_path / "keys")
    events, _ = a_busy_fleet()
    log = stored(events)
    everyone = HistoryFold(keys=keyring)
    for item in log:
        await everyone.apply(item)
    plain = snapshot_parts(everyone.state, unsealed_copy(everyone))
    parts = snapshot_parts(everyone.state, everyone)
    assert parts.contents, "the fleet has content to keep"
    assert all(is_sealed_bytes(data) for data in parts.contents.values())
    for data in plain.contents.values():
        assert data not in parts.contents.values()
        assert not any(data in sealed for sealed in parts.contents.values())

    def restored(cluster: str, keys: Keyring | None) -> object:
        history = read_history(parts.histories[cluster], cluster)
        return restore_history(history, parts.contents, keys)

    for cluster in ("c1", "c2", "c3"):
        if cluster not in parts.histories:
            continue
        start = history_fold_from(
            read_placement(parts.placement),
            T0,
            cluster,
            read_history(parts.histories[cluster], cluster),
            parts.contents,
            None,
            keyring,
        )
        from_snapshot = await desired_state_at(replay([]), cluster, start=start, keys=keyring)
        whole = await desired_state_at(replay(log), cluster, keys=keyring)
        assert from_snapshot.tasks == whole.tasks, cluster
        with pytest.raises(SnapshotUnreadable, match="no keyring"):
            restored(cluster, None)
    shredded = next(c for c in ("c1", "c2", "c3") if c in parts.histories)
    keyring.shred(cluster_scope(shredded), datetime.now(UTC))
    with pytest.raises(SnapshotUnreadable, match="shredded"):
        restored(shredded, keyring)
    for cluster in parts.histories:
        if cluster != shredded:
            restored(cluster, keyring)


def unsealed_copy(fold: HistoryFold) -> HistoryFold:
    """The same fold, as a hub that seals nothing would keep it."""
    return HistoryFold(
        fold.renderer,
        state=fold.state,
        current=fold.current,
        last_seq=fold.last_seq,
        last_time=fold.last_time,
    )
