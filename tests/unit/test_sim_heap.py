"""A process running a simulated fleet collects garbage rarely and never walks its start-up
objects again (`simulator.heap`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from simulator.heap import COLLECTOR_THRESHOLDS, settle_heap


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_what_lives_when_the_fleet_is_connected_is_frozen_out_of_collections(
    collector: None,
) -> None:
    held = [[index] for index in range(10_000)]
    settled = settle_heap()
    assert settled.frozen >= len(held)
    assert gc.get_freeze_count() == settled.frozen
    collected = {id(tracked) for tracked in gc.get_objects()}
    assert not any(id(item) in collected for item in held)


def test_young_collections_wait_for_many_more_allocations_than_the_default(
    collector: None,
) -> None:
    settled = settle_heap()
    assert settled.thresholds == COLLECTOR_THRESHOLDS
    collections = gc.get_stats()[0]["collections"]
    kept = [[index] for index in range(20_000)]
    assert gc.get_stats()[0]["collections"] == collections, "a young collection ran"
    assert gc.get_count()[0] >= len(kept)
