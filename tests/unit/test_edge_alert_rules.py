"""The edge alert rules name only metrics the connector and the controller really export."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.exported_metrics import CONTROLLER_METRICS, edge_metrics

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "fleetbus-rules.yaml"


def test_every_edge_rule_uses_an_exported_metric() -> None:
    groups = {g["name"]: g for g in yaml.safe_load(RULES.read_text())["groups"]}
    connector = edge_metrics()
    rules = groups["fleetbus-edge"]["rules"]
    assert {r["alert"] for r in rules} >= {"FleetbusEdgeNotReady", "FleetbusControllerNotReady"}
    for rule in rules:
        names = set(re.findall(r"fleetbus_[a-z_]+", rule["expr"]))
        assert names, rule
        assert names <= connector | CONTROLLER_METRICS, (rule["alert"], names)
