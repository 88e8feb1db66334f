"""The consumer gate's decisions, as a table: a mirror of the cluster's own slice, nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from access.consumer_rules import Forward, Refuse, decide_request

CREATE = "CONSUMER.CREATE.DESIRED.JS_MIRROR_ab12.fleet.desired.east.>"


def mirror(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "JS_MIRROR_ab12",
        "ack_policy": "none",
        "filter_subject": "fleet.desired.east.>",
        "flow_control": True,
        "deliver_subject": "fleet.sync.desired.east.M.x1",
        "inactive_threshold": 10_000_000_000,
        "direct": True,
        "metadata": {"_nats.mirror.domain": "edge-east", "_nats.mirror.stream": "DESIRED-east"},
    }
    config.update(changes)
    return {"stream_name": "DESIRED", "config": config, "action": ""}


def test_the_mirror_of_the_cluster_own_slice_is_forwarded_to_jetstream() -> None:
    verdict = decide_request("east", CREATE, mirror(), live=set(), registered=True)
    assert verdict == Forward(f"$JS.API.{CREATE}", "JS_MIRROR_ab12", creates=True)


@pytest.mark.parametrize(
    ("api", "body", "live", "registered", "rule"),
    [
        (CREATE, mirror(), set(), False, "not registered"),
        (CREATE, mirror(deliver_subject="fleet.sync.desired.west.M.x"), set(), True, "own prefix"),
        (CREATE, mirror(deliver_subject="fleet.sync.desired.east.M.*"), set(), True, "own prefix"),
        (CREATE, mirror(durable_name="d"), set(), True, "durable"),
        (CREATE, mirror(filter_subjects=["fleet.desired.>"]), set(), True, "filter must be"),
        (CREATE, mirror(ack_policy="explicit"), set(), True, "does not ack"),
        (CREATE, mirror(direct=False), set(), True, "direct"),
        (CREATE, mirror(inactive_threshold=61_000_000_000), set(), True, "at most 60 s"),
        (CREATE, mirror(deliver_group="g"), set(), True, "deliver groups"),
        (CREATE, mirror(metadata={}), set(), True, "must belong to the mirror"),
        (CREATE, mirror(name="other"), set(), True, "differs from the subject"),
        (CREATE, None, set(), True, "not a JSON object"),
        (CREATE, mirror(), {"JS_MIRROR_a-1", "JS_MIRROR_b-2"}, True, "limit 2"),
        ("CONSUMER.DELETE.DESIRED.edge-east", None, set(), True, "may be deleted"),
        ("CONSUMER.INFO.DESIRED.edge-west", None, set(), True, "not an operation"),
    ],
)
def test_anything_else_is_refused_naming_the_rule(
    api: str, body: dict[str, Any] | None, live: set[str], registered: bool, rule: str
) -> None:
    verdict = decide_request("east", api, body, live=live, registered=registered)
    assert isinstance(verdict, Refuse)
    assert rule in verdict.reason


def test_a_consumer_the_gate_created_may_be_deleted_by_its_cluster() -> None:
    api = "CONSUMER.DELETE.DESIRED.JS_MIRROR_ab12-Zx9"
    verdict = decide_request("east", api, None, live={"JS_MIRROR_ab12-Zx9"}, registered=True)
    assert verdict == Forward(f"$JS.API.{api}", "JS_MIRROR_ab12-Zx9", creates=False)
