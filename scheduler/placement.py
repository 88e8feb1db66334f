"""Placement: which registered clusters a taskset version goes to.

A pure function of the snapshot's placement and the registry, re-evaluated whenever either
changes: a cluster that gains a matching label is a new target, one that loses it is not one
any more (and gets a removal). Explicit names of clusters that are not registered are ignored
until they register.
"""

from __future__ import annotations

from collections.abc import Mapping

from events.catalog import Placement
from taskset.selectors import InvalidSelector, parse_selector


def place_taskset(placement: Placement, clusters: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The registered clusters `placement` selects, sorted by name."""
    chosen = {name for name in placement.clusters if name in clusters}
    if placement.selector:
        try:
            selector = parse_selector(placement.selector)
        except InvalidSelector:
            # Refused at publish; an old event with a bad selector places by name only.
            selector = None
        if selector is not None:
            chosen.update(name for name, labels in clusters.items() if selector.matches(labels))
    return sorted(chosen)
