"""Percentiles, spreads and ratios: the arithmetic every figure shares, kept pure and tested.

Percentiles use linear interpolation between closest ranks (numpy's default), so p50 of an even
number of samples is the mean of the middle two and p99 of a few runs lies between the two
largest. A latency figure pools its samples; a throughput figure takes one value per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec


class Spread(msgspec.Struct, frozen=True, kw_only=True):
    """Where a set of samples lies: count, percentiles, extremes."""

    n: int
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    mean: float


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100) of `samples`, linearly interpolated between ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    fraction = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


def spread(samples: Sequence[float]) -> Spread:
    if not samples:
        raise ValueError("spread of no samples")
    return Spread(
        n=len(samples),
        p50=percentile(samples, 50),
        p90=percentile(samples, 90),
        p99=percentile(samples, 99),
        min=float(min(samples)),
        max=float(max(samples)),
        mean=float(sum(samples) / len(samples)),
    )


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """ours / baseline; None when either is unknown or the baseline is not positive."""
    if ours is None or baseline is None or baseline <= 0.0:
        return None
    return ours / baseline


def rate(count: int, seconds: float) -> float:
    """Items per second; a zero or negative duration is a measurement bug, not infinity."""
    if seconds <= 0.0:
        raise ValueError(f"cannot compute a rate over {seconds} s")
    return count / seconds
