"""Simulated clusters spread over the hub's nodes, and fail over to the others in turn."""

from __future__ import annotations

from collections import Counter

import pytest

from simulator.workers import hub_urls_for, sim_index, sim_name

URLS = ["nats://a", "nats://b", "nats://c"]


def test_each_simulated_cluster_starts_on_the_node_of_its_number_round_and_round() -> None:
    firsts = [hub_urls_for(index, URLS)[0] for index in range(1, 7)]
    assert firsts == [*URLS, *URLS]


def test_every_cluster_can_reach_every_node_each_once() -> None:
    for index in range(1, 13):
        assert sorted(hub_urls_for(index, URLS)) == URLS


def test_the_clusters_of_a_lost_node_fail_over_evenly_to_the_others() -> None:
    on_a = [index for index in range(1, 601) if hub_urls_for(index, URLS)[0] == "nats://a"]
    failover = Counter(hub_urls_for(index, URLS)[1] for index in on_a)
    assert failover == {"nats://b": 100, "nats://c": 100}


def test_a_fleet_is_spread_evenly_over_the_nodes() -> None:
    counts = Counter(hub_urls_for(index, URLS)[0] for index in range(1, 10_001))
    assert sorted(counts.values()) == [3333, 3333, 3334]


def test_one_url_is_every_cluster_s_only_url() -> None:
    assert hub_urls_for(5, ["nats://only"]) == ["nats://only"]


@pytest.mark.parametrize(
    ("index", "urls", "message"), [(0, URLS, "numbered from 1"), (1, [], "at least one hub URL")]
)
def test_a_cluster_number_below_one_or_no_url_is_refused(
    index: int, urls: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        hub_urls_for(index, urls)


def test_a_simulated_cluster_s_number_reads_back_from_its_name() -> None:
    assert sim_index(sim_name(4711)) == 4711
    with pytest.raises(ValueError, match="edge-1"):
        sim_index("edge-1")
