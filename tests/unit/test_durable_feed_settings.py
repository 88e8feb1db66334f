"""The pull settings of a cluster's durable: what an idle fleet costs the hub."""

from __future__ import annotations

from typing import Any, cast

from edge_connector.jetstream import DURABLE_HEARTBEAT_S, DurableFeed

FLEET = 10_000


def test_an_idle_fleet_of_10000_costs_the_hub_at_most_2000_heartbeats_a_second() -> None:
    feed = DurableFeed(cast(Any, None), "c-1")
    assert feed.settings.heartbeat == DURABLE_HEARTBEAT_S
    assert FLEET / feed.settings.heartbeat <= 2_000


def test_a_silent_pull_is_sent_again_well_before_it_expires() -> None:
    settings = DurableFeed(cast(Any, None), "c-1").settings
    silence = 2 * settings.heartbeat + 1.0
    assert silence < settings.expires / 2
