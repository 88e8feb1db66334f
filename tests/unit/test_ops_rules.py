"""The shipped Prometheus rules query only metrics the hub exposes."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.exported_metrics import hub_metrics

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "fleetbus-rules.yaml"


def exposed_samples() -> set[str]:
    return hub_metrics()


def test_every_alert_queries_only_metrics_the_hub_exposes() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [
        rule for group in groups if group["name"] != "fleetbus-edge" for rule in group["rules"]
    ]
    assert len(rules) >= 6
    assert "FleetbusClusterControllersNotReady" in {rule["alert"] for rule in rules}
    exposed = exposed_samples()
    for rule in rules:
        used = set(re.findall(r"\bfleetbus_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exposed, f"{rule['alert']} uses unknown metrics {sorted(used - exposed)}"
        assert rule["annotations"]["summary"]


def test_alert_names_are_unique() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
