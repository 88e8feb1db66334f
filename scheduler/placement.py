"""Placement: which registered clusters a taskset version goes to.

A pure function of the snapshot's placement and the registry, re-evaluated whenever either
changes: a cluster that gains a matching label is a new target, one that loses it is not one
any more (and gets a removal). Explicit names of clusters that are not registered are ignored
until they register.

A taskset is placed only on clusters of its own project (`taskset.projects`): a selector in one
project never matches another project's clusters, whatever their labels, and naming another
project's cluster explicitly places nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from events.catalog import Placement
from taskset.projects import project_of
from taskset.selectors import InvalidSelector, parse_selector


def place_taskset(
    placement: Placement, clusters: Mapping[str, Mapping[str, str]], *, taskset: str
) -> list[str]:
    """The registered clusters of `taskset`'s project that `placement` selects, by name."""
    project = project_of(taskset)
    clusters = {name: labels for name, labels in clusters.items() if project_of(name) == project}
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
