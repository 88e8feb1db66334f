"""What one benchmark figure produces: its metrics, the targets they answer to, and its story.

A figure is measured, partly measured (some metrics say why they are missing), or not measured
at all (its component does not exist yet, or the run failed). The report renders all three the
same way, so a missing number is always visible as missing, never as a zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from bench.summary import Spread, spread

Better = Literal["lower", "higher"]
Verdict = Literal["met", "missed", "not measured"]


@dataclass(frozen=True)
class Mode:
    """How hard to run: `full` for BENCHMARKS.md, `quick` to check the benchmarks still work."""

    name: Literal["full", "quick"]
    repeats: int
    clusters: int = 0
    """Fleet size for the figures that take one (P2, P13, P14); 0: the figure's own."""

    @property
    def quick(self) -> bool:
        return self.name == "quick"


FULL = Mode(name="full", repeats=3)
QUICK = Mode(name="quick", repeats=1)


class Metric(msgspec.Struct, frozen=True, kw_only=True):
    """One number of a figure: its headline value and, when repeated, each run's value."""

    key: str
    """Its key in results.json (e.g. `p99_s`, `append_per_s`)."""
    label: str
    unit: str
    value: float | None
    better: Better = "lower"
    runs: list[float] = msgspec.field(default_factory=list)
    """One value per repeated run; the headline `value` is derived from these or pooled samples."""
    samples: Spread | None = None
    """The pooled distribution behind a latency headline (p50/p99/max over every sample)."""
    missing: str = ""
    """Why `value` is None."""

    @property
    def run_spread(self) -> Spread | None:
        return spread(self.runs) if self.runs else None


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A bound a metric must meet: `value <= bound` (lower is better) or `value >= bound`."""

    metric: str
    label: str
    bound: float
    unit: str
    better: Better = "lower"
    strict: bool = False
    """`<` / `>` instead of `<=` / `>=`."""

    def judge(self, value: float | None) -> Verdict:
        if value is None:
            return "not measured"
        if self.better == "lower":
            ok = value < self.bound if self.strict else value <= self.bound
        else:
            ok = value > self.bound if self.strict else value >= self.bound
        return "met" if ok else "missed"

    @property
    def condition(self) -> str:
        if self.better == "lower":
            op = "<" if self.strict else "≤"
        else:
            op = ">" if self.strict else "≥"
        return f"{op} {format_number(self.bound)} {self.unit}".rstrip()


class FigureResult(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    """P1 … P6."""
    title: str
    metrics: list[Metric] = msgspec.field(default_factory=list)
    targets: list[Target] = msgspec.field(default_factory=list)
    method: str = ""
    """How it was measured (topology, sizes, repeats), as Markdown."""
    notes: list[str] = msgspec.field(default_factory=list)
    """Findings: what bounds a figure, what was changed to reach a target."""
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    """More results.json keys (per-size breakdowns, raw baselines)."""
    not_measured: str = ""
    """Why the whole figure has no numbers; empty when it was measured."""
    seconds: float = 0.0
    """Wall time the figure took to run."""

    def metric(self, key: str) -> Metric | None:
        for metric in self.metrics:
            if metric.key == key:
                return metric
        return None

    def value(self, key: str) -> float | None:
        metric = self.metric(key)
        return None if metric is None else metric.value

    def verdicts(self) -> list[tuple[Target, float | None, Verdict]]:
        out: list[tuple[Target, float | None, Verdict]] = []
        for target in self.targets:
            value = self.value(target.metric)
            out.append((target, value, target.judge(value)))
        return out


def not_measured(key: str, title: str, reason: str, targets: list[Target]) -> FigureResult:
    return FigureResult(key=key, title=title, targets=targets, not_measured=reason)


def format_number(value: float) -> str:
    """A readable number: thousands separated, at most three significant decimals."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2g}"
