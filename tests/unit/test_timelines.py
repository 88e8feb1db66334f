"""The dashboard's series are pure folds over audit rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from projector.timelines import fill_rate, fold_convergence

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_convergence_counts_each_clusters_latest_outcome_and_marks_waves() -> None:
    rows = [
        (at(0), "RolloutAdvanced", "", "web v2 wave 1/3: a"),
        (at(1), "TaskFailed", "a", "web v2 failed on a"),
        (at(2), "TaskApplied", "a", "web v2 applied on a"),
        (at(3), "RolloutAdvanced", "", "web v2 wave 2/3: b, c"),
        (at(4), "TaskApplied", "b", ""),
        (at(4), "TaskFailed", "c", ""),
        (at(5), "RolloutHalted", "", "web v2 halted: c"),
    ]
    series = fold_convergence("web", T0, rows)
    assert [(p.at, p.applied, p.failed) for p in series.points] == [
        (at(1), 0, 1),
        (at(2), 1, 0),
        (at(4), 2, 1),
    ], "one point per moment, the last state at that moment"
    assert [(w.wave, w.total_waves, w.halted) for w in series.waves] == [
        (1, 3, False),
        (2, 3, False),
        (2, 3, True),
    ], "a halt is marked on the wave it stopped"


def test_the_rate_has_every_bucket_of_the_window_even_empty_ones() -> None:
    since, until = at(0), at(299)
    first = int(since.timestamp()) // 60
    buckets = fill_rate(
        [(first, "EVENTS", 3), (first, "REPORTS", 2), (first + 3, "REPORTS", 7)], since, until, 60
    )
    assert [(b.events, b.reports) for b in buckets] == [(3, 2), (0, 0), (0, 0), (0, 7), (0, 0)]
    assert buckets[1].at == at(60)
