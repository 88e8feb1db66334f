"""Rollout waves: how a new version spreads over its target clusters.

A version reaches clusters wave by wave. Waves are cut from the targets that have not had a
wave yet, in name order, `wave_size` at a time, so clusters that join later simply fall into a
later wave. Without a batch size or cap, every target starts at once and clusters that join
later start as they join. Otherwise the next wave starts once every cluster of the started
waves has settled (reported the version applied at its scheduled generation, or failed) and
`pause_seconds` have passed since the last of them settled. More failures than
`failure_threshold` halt the rollout until a new version is published or it is resumed. Time
is a parameter: nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Literal

from events.catalog import RolloutStrategy

Outcome = Literal["pending", "applied", "failed", "forgiven"]
"""`forgiven`: failed before the rollout was resumed; settled, but not counted as a failure."""


def wave_size(strategy: RolloutStrategy, targets: int) -> int:
    """Clusters per wave: the batch size (0 = all), capped by `max_unavailable` (0 = no cap)."""
    size = strategy.batch_size if strategy.batch_size > 0 else targets
    if strategy.max_unavailable > 0:
        size = min(size, strategy.max_unavailable)
    return max(1, size)


def cut_waves(clusters: Sequence[str], size: int) -> list[list[str]]:
    ordered = sorted(clusters)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


@dataclass(frozen=True)
class RolloutView:
    """What the rollout of one version has done so far (folded from the log)."""

    version: int
    waves: tuple[tuple[str, ...], ...] = ()
    halted: bool = False

    @cached_property
    def started(self) -> frozenset[str]:
        return frozenset(self.wave_of)

    @cached_property
    def wave_of(self) -> dict[str, int]:
        """The wave each started cluster is in (computed once: fleets have 10,000 clusters)."""
        return {cluster: index for index, wave in enumerate(self.waves) for cluster in wave}


@dataclass(frozen=True)
class RolloutStep:
    """What to do next: start a wave, halt, or wait (until `wake_at`, if time will tell)."""

    start_wave: tuple[str, ...] = ()
    halt_failed: tuple[str, ...] = ()
    total_waves: int = 0
    wake_at: datetime | None = None


def next_rollout_step(
    view: RolloutView,
    targets: Sequence[str],
    strategy: RolloutStrategy,
    outcomes: Mapping[str, Outcome],
    settled_at: datetime | None,
    now: datetime,
) -> RolloutStep:
    """Decide the next move of a rollout.

    `outcomes` gives each started target's outcome for this version at its current generation;
    `settled_at` is when the last of them settled (None if unknown).
    """
    size = wave_size(strategy, len(targets) or 1)
    active = [c for c in targets if c in view.started]
    remaining = [c for c in sorted(targets) if c not in view.started]
    waves_total = len(view.waves) + math.ceil(len(remaining) / size)
    if view.halted:
        return RolloutStep(total_waves=waves_total)
    failed = sorted(c for c in active if outcomes.get(c) == "failed")
    if len(failed) > strategy.failure_threshold:
        return RolloutStep(halt_failed=tuple(failed), total_waves=waves_total)
    if not remaining:
        return RolloutStep(total_waves=waves_total)
    unbatched = strategy.batch_size <= 0 and strategy.max_unavailable <= 0
    if view.waves and not unbatched:
        if any(outcomes.get(c, "pending") == "pending" for c in active):
            return RolloutStep(total_waves=waves_total)
        if settled_at is not None and strategy.pause_seconds > 0:
            ready_at = settled_at + timedelta(seconds=strategy.pause_seconds)
            if now < ready_at:
                return RolloutStep(total_waves=waves_total, wake_at=ready_at)
    return RolloutStep(start_wave=tuple(remaining[:size]), total_waves=waves_total)
