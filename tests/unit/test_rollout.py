"""Rollout waves: table-driven, time as a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events.catalog import RolloutStrategy
from scheduler.rollout import (
    Outcome,
    RolloutStep,
    RolloutView,
    cut_waves,
    next_rollout_step,
    wave_size,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TARGETS = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("batch", "max_unavailable", "targets", "size"),
    [
        (0, 0, 5, 5),
        (2, 0, 5, 2),
        (0, 3, 5, 3),
        (4, 2, 5, 2),
        (2, 4, 5, 2),
        (10, 0, 5, 10),
        (0, 0, 0, 1),
    ],
)
def test_wave_size_is_the_batch_capped_by_max_unavailable(
    batch: int, max_unavailable: int, targets: int, size: int
) -> None:
    strategy = RolloutStrategy(batch_size=batch, max_unavailable=max_unavailable)
    assert wave_size(strategy, targets) == size


def test_waves_are_cut_in_name_order() -> None:
    assert cut_waves(["e", "a", "c", "b", "d"], 2) == [["a", "b"], ["c", "d"], ["e"]]


BATCH2 = RolloutStrategy(batch_size=2)
PAUSED = RolloutStrategy(batch_size=2, pause_seconds=30)
TOLERANT = RolloutStrategy(batch_size=2, failure_threshold=1)


def view(*waves: tuple[str, ...], halted: bool = False) -> RolloutView:
    return RolloutView(version=2, waves=tuple(waves), halted=halted)


CASES: list[
    tuple[
        str,
        RolloutView,
        RolloutStrategy,
        dict[str, Outcome],
        datetime | None,
        datetime,
        RolloutStep,
    ]
] = [
    (
        "the first wave starts at once",
        view(),
        BATCH2,
        {},
        None,
        T0,
        RolloutStep(start_wave=("a", "b"), total_waves=3),
    ),
    (
        "all at once without a batch size",
        view(),
        RolloutStrategy(),
        {},
        None,
        T0,
        RolloutStep(start_wave=tuple(TARGETS), total_waves=1),
    ),
    (
        "a wave with a pending cluster waits",
        view(("a", "b")),
        BATCH2,
        {"a": "applied", "b": "pending"},
        T0,
        T0,
        RolloutStep(total_waves=3),
    ),
    (
        "a settled wave starts the next",
        view(("a", "b")),
        BATCH2,
        {"a": "applied", "b": "applied"},
        T0,
        T0,
        RolloutStep(start_wave=("c", "d"), total_waves=3),
    ),
    (
        "the pause is waited out",
        view(("a", "b")),
        PAUSED,
        {"a": "applied", "b": "applied"},
        T0,
        T0 + timedelta(seconds=10),
        RolloutStep(total_waves=3, wake_at=T0 + timedelta(seconds=30)),
    ),
    (
        "after the pause the next wave starts",
        view(("a", "b")),
        PAUSED,
        {"a": "applied", "b": "applied"},
        T0,
        T0 + timedelta(seconds=30),
        RolloutStep(start_wave=("c", "d"), total_waves=3),
    ),
    (
        "one failure over a threshold of 0 halts",
        view(("a", "b")),
        BATCH2,
        {"a": "failed", "b": "pending"},
        T0,
        T0,
        RolloutStep(halt_failed=("a",), total_waves=3),
    ),
    (
        "a failure within the threshold settles the wave",
        view(("a", "b")),
        TOLERANT,
        {"a": "failed", "b": "applied"},
        T0,
        T0,
        RolloutStep(start_wave=("c", "d"), total_waves=3),
    ),
    (
        "two failures over a threshold of 1 halt",
        view(("a", "b"), ("c", "d")),
        TOLERANT,
        {"a": "failed", "b": "applied", "c": "failed", "d": "pending"},
        T0,
        T0,
        RolloutStep(halt_failed=("a", "c"), total_waves=3),
    ),
    (
        "forgiven failures settle without counting",
        view(("a", "b")),
        BATCH2,
        {"a": "forgiven", "b": "applied"},
        T0,
        T0,
        RolloutStep(start_wave=("c", "d"), total_waves=3),
    ),
    (
        "a halted rollout does nothing",
        view(("a", "b"), halted=True),
        BATCH2,
        {"a": "applied", "b": "applied"},
        T0,
        T0,
        RolloutStep(total_waves=3),
    ),
    (
        "a finished rollout does nothing",
        view(("a", "b"), ("c", "d"), ("e",)),
        BATCH2,
        dict.fromkeys(TARGETS, "applied"),
        T0,
        T0,
        RolloutStep(total_waves=3),
    ),
]


@pytest.mark.parametrize(
    ("case", "current", "strategy", "outcomes", "settled_at", "now", "expected"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_the_next_rollout_step(
    case: str,
    current: RolloutView,
    strategy: RolloutStrategy,
    outcomes: dict[str, Outcome],
    settled_at: datetime | None,
    now: datetime,
    expected: RolloutStep,
) -> None:
    assert next_rollout_step(current, TARGETS, strategy, outcomes, settled_at, now) == expected


def test_a_cluster_that_joins_late_falls_into_a_later_wave() -> None:
    started = view(("a", "b"), ("c", "d"), ("e",))
    outcomes: dict[str, Outcome] = dict.fromkeys(TARGETS, "applied")
    step = next_rollout_step(started, [*TARGETS, "aa"], BATCH2, outcomes, T0, T0)
    assert step == RolloutStep(start_wave=("aa",), total_waves=4)


def test_without_a_batch_size_a_late_cluster_starts_without_waiting_for_reports() -> None:
    step = next_rollout_step(view(("a", "b")), ["a", "b", "c"], RolloutStrategy(), {}, None, T0)
    assert step.start_wave == ("c",)


def test_a_cluster_that_left_no_longer_holds_its_wave_back() -> None:
    step = next_rollout_step(view(("a", "b")), ["b", "c"], BATCH2, {"b": "applied"}, T0, T0)
    assert step.start_wave == ("c",)
