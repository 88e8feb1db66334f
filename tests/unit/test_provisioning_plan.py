"""The provisioning plan (what to create and delete) and its bounded runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from events import edges
from scheduler.provisioning import (
    clusters_to_ensure,
    durable_config,
    durables_to_rehome,
    leftover_outboxes,
    nodes_back,
    removed_clusters,
    run_bounded,
    unavailable_peers,
)

BEFORE = {"a": edges.LEAF, "b": edges.CLIENT, "c": edges.CLIENT, "d": edges.LEAF}
AFTER = {"a": edges.LEAF, "b": edges.LEAF, "d": edges.CLIENT, "e": edges.CLIENT}


def test_a_plan_creates_what_is_new_or_reconnected_and_deletes_what_is_gone() -> None:
    assert removed_clusters(BEFORE, AFTER) == ["c"]
    assert clusters_to_ensure(BEFORE, AFTER) == [
        ("b", edges.LEAF),
        ("d", edges.CLIENT),
        ("e", edges.CLIENT),
    ]


def test_a_plan_for_an_unchanged_fleet_does_nothing() -> None:
    assert removed_clusters(BEFORE, BEFORE) == []
    assert clusters_to_ensure(BEFORE, BEFORE) == []


def test_only_hub_side_outboxes_are_leftovers_to_remove() -> None:
    names = ["REPORTS", "REPORTS-sim-2", "EVENTS", "REPORTS-sim-10", "DESIRED"]
    assert leftover_outboxes(names) == ["REPORTS-sim-10", "REPORTS-sim-2"]


def recorder(
    done: list[int], in_flight: list[int], peak: list[int]
) -> Callable[[int], Callable[[], Awaitable[None]]]:
    def call(index: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            in_flight.append(index)
            peak[0] = max(peak[0], len(in_flight))
            await asyncio.sleep(0)
            in_flight.remove(index)
            done.append(index)

        return run

    return call


async def test_bounded_calls_all_run_with_no_more_than_the_limit_in_flight() -> None:
    done: list[int] = []
    in_flight: list[int] = []
    peak = [0]
    call = recorder(done, in_flight, peak)
    await run_bounded((call(i) for i in range(1000)), limit=7)
    assert sorted(done) == list(range(1000))
    assert peak[0] == 7


async def test_the_first_failure_of_bounded_calls_surfaces_as_itself() -> None:
    started: list[int] = []

    def call(index: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            started.append(index)
            await asyncio.sleep(0)
            if index == 3:
                raise LookupError("cluster 3 refused")

        return run

    with pytest.raises(LookupError, match="cluster 3 refused"):
        await run_bounded((call(i) for i in range(1000)), limit=4)
    assert len(started) < 1000


def test_every_durable_on_desired_has_one_replica_whatever_the_stream_has() -> None:
    config = durable_config("alpha")
    assert config["num_replicas"] == 1
    assert config["filter_subject"] == "fleet.desired.alpha.>"


SECOND = 1_000_000_000


def test_a_replica_offline_or_silent_is_unavailable_and_a_live_one_is_not() -> None:
    info = {
        "cluster": {
            "leader": "hub-1",
            "replicas": [
                {"name": "hub-2", "current": True, "active": SECOND // 5},
                {"name": "hub-3", "current": True, "active": 4 * SECOND},
                {"name": "hub-4", "current": False, "active": SECOND // 2, "lag": 10},
                {"name": "hub-5", "current": True, "offline": True, "active": 0},
            ],
        }
    }
    assert unavailable_peers(info, silent_ns=3 * SECOND) == {"hub-3", "hub-5"}
    assert unavailable_peers({"config": {}}, silent_ns=3 * SECOND) == frozenset()


def test_a_replica_a_new_leader_never_heard_from_is_unavailable() -> None:
    # What a leader elected after the old leader was killed says of it, for as long as it
    # stays down (nats-server 2.15.1).
    info = {
        "cluster": {
            "leader": "hub-2",
            "replicas": [
                {"name": "hub-1", "current": False, "active": 0, "lag": 26},
                {"name": "hub-3", "current": True, "active": SECOND // 2},
            ],
        }
    }
    assert unavailable_peers(info, silent_ns=3 * SECOND) == {"hub-1"}


def test_durables_led_by_no_node_up_are_rehomed_and_only_of_registered_clusters() -> None:
    provisioned = {n: edges.CLIENT for n in ("alpha", "beta", "gamma", "delta")}
    leaders = {
        edges.desired_durable("alpha"): "",  # listed as missing
        edges.desired_durable("beta"): "hub-2",
        edges.desired_durable("gamma"): "hub-3",  # led by the node that is down
        edges.desired_durable("delta"): "hub-1",
        "edge-gone": "",
    }
    assert durables_to_rehome(leaders, {"hub-3"}, provisioned) == ["alpha", "gamma"]
    assert durables_to_rehome(leaders, set(), provisioned) == ["alpha"]
    assert durables_to_rehome({}, {"hub-3"}, provisioned) == []


def test_a_node_is_back_when_it_leads_the_stream_or_is_a_current_replica_not_down() -> None:
    info = {
        "cluster": {
            "leader": "hub-1",
            "replicas": [
                {"name": "hub-2", "current": True, "active": SECOND // 5},
                {"name": "hub-3", "current": False, "active": 0, "lag": 26},
                {"name": "hub-4", "current": True, "active": 4 * SECOND},
            ],
        }
    }
    watched = {"hub-1", "hub-2", "hub-3", "hub-4", "hub-5"}
    assert nodes_back(info, watched, down={"hub-4"}) == {"hub-1", "hub-2"}
    assert nodes_back(info, {"hub-3"}, down=set()) == frozenset()
    assert nodes_back({"config": {}}, watched, down=set()) == frozenset()
