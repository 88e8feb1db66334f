"""The Grafana dashboards in ops/grafana draw only metrics fleetbus exports, and the edge one
draws every metric the connector and the controller export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.exported_metrics import (
    COMPONENT_METRICS,
    CONTROLLER_METRICS,
    edge_metrics,
    hub_metrics,
)

GRAFANA = Path(__file__).resolve().parents[2] / "ops" / "grafana"
DASHBOARDS = sorted(GRAFANA.glob("*.json"))
METRIC = re.compile(r"\bfleetbus_[a-z_]+")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def used_metrics(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Per panel title, the fleetbus metrics its queries name."""
    return {
        panel["title"]: {
            name for target in panel["targets"] for name in METRIC.findall(target["expr"])
        }
        for panel in panels(dashboard)
    }


def unknown_metrics(dashboard: dict[str, Any], exported: set[str]) -> dict[str, list[str]]:
    return {
        title: sorted(names - exported)
        for title, names in used_metrics(dashboard).items()
        if names - exported
    }


def test_the_hub_and_edge_dashboards_are_shipped() -> None:
    assert {path.name for path in DASHBOARDS} >= {"fleetbus.json", "fleetbus-edge.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_only_metrics_that_exist(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    exported = hub_metrics() | edge_metrics() | CONTROLLER_METRICS | COMPONENT_METRICS
    assert unknown_metrics(dashboard, exported) == {}
    uids = {panel["datasource"]["uid"] for panel in panels(dashboard)}
    assert uids == {"${datasource}"}, "every panel uses the dashboard's Prometheus variable"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        assert all(METRIC.search(t["expr"]) for t in panel["targets"]), panel["title"]


def test_the_edge_dashboard_draws_every_metric_of_the_connector_and_the_controller() -> None:
    dashboard = json.loads((GRAFANA / "fleetbus-edge.json").read_text())
    used = set().union(*used_metrics(dashboard).values())
    assert (edge_metrics() | CONTROLLER_METRICS | COMPONENT_METRICS) - used == set()


def test_the_hub_dashboard_draws_notification_delivery() -> None:
    dashboard = json.loads((GRAFANA / "fleetbus.json").read_text())
    used = set().union(*used_metrics(dashboard).values())
    assert {
        "fleetbus_notifications_delivered_total",
        "fleetbus_notification_failures_total",
        "fleetbus_notification_consecutive_failures",
    } <= used


def test_a_panel_naming_a_metric_that_is_gone_is_caught() -> None:
    dashboard = {
        "panels": [
            {
                "type": "timeseries",
                "title": "Old",
                "targets": [{"expr": "rate(fleetbus_edge_applies_total[5m])"}],
            }
        ]
    }
    assert unknown_metrics(dashboard, edge_metrics()) == {"Old": ["fleetbus_edge_applies_total"]}
