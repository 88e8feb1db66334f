"""The JetStream floor of P2 (`bench.desired_fanout`) on a real nats-server it starts itself."""

from __future__ import annotations

import pytest

from bench.desired_fanout import FILTERINGS, consumer_config, measure, stream_config
from bench.p2_convergence_10k import floor_metrics
from events.streams import desired_stream
from scheduler.provisioning import durable_config


def test_the_floor_uses_the_settings_of_desired_and_of_the_hubs_durables() -> None:
    stream = stream_config("DESIRED_0", "fleet.desired.s0", 10)
    expected = desired_stream()
    for key in ("storage", "max_msgs_per_subject", "compression", "retention", "discard"):
        assert stream[key] == expected[key]
    assert stream["subjects"] == ["fleet.desired.s0.>"]
    assert stream["max_consumers"] >= 10
    consumer = consumer_config("c1", "fleet.desired.s0.c1.>")
    provisioned = durable_config("c1")
    assert consumer["durable_name"] == provisioned["durable_name"]
    assert {k: v for k, v in consumer.items() if k != "filter_subject"} == {
        k: v for k, v in provisioned.items() if k != "filter_subject"
    }
    assert consumer["filter_subject"] == "fleet.desired.s0.c1.>"


@pytest.mark.parametrize("filtering", FILTERINGS)
async def test_every_consumer_gets_its_message_in_both_rounds(filtering: str) -> None:
    rows = await measure(40, b"x" * 600, filtering=filtering, settle=30.0)
    assert [row["round"] for row in rows] == ["first", "update"]
    for row in rows:
        assert row["clusters"] == 40
        assert row["filter"] == filtering
        assert row["size"] == 600
        assert 0 < row["all_written_s"] <= row["all_delivered_s"] + 1.0
        assert row["p50_s"] <= row["all_delivered_s"]


def test_the_ratio_to_the_floor_is_the_update_over_the_floors_update() -> None:
    floors = {
        "wildcard": {"all_delivered_s": 4.0},
        "literal": {"all_delivered_s": 1.0},
    }
    metrics = {m.key: m.value for m in floor_metrics(1000, floors, 10.0)}
    assert metrics == {"floor_update_s": 4.0, "floor_literal_update_s": 1.0, "floor_ratio": 2.5}
    assert "floor_ratio" not in {m.key for m in floor_metrics(1000, floors, None)}
