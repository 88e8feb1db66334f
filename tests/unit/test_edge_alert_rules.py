"""The edge alert rules name only metrics the connector and the controller really export."""

from __future__ import annotations

import re
from pathlib import Path

import httpx2 as httpx
import yaml

from cluster_controller.kube import Kube
from fleetbus.edge import ControllerSettings
from fleetbus.edge_controller import ControllerComponent
from tests.exported_metrics import COMPONENT_METRICS, CONTROLLER_METRICS, edge_metrics

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "fleetbus-rules.yaml"


def test_every_edge_rule_uses_an_exported_metric() -> None:
    groups = {g["name"]: g for g in yaml.safe_load(RULES.read_text())["groups"]}
    connector = edge_metrics()
    rules = groups["fleetbus-edge"]["rules"]
    assert {r["alert"] for r in rules} >= {
        "FleetbusEdgeNotReady",
        "FleetbusControllerNotReady",
        "FleetbusEdgeComponentRestarting",
    }
    for rule in rules:
        names = set(re.findall(r"fleetbus_[a-z_]+", rule["expr"]))
        assert names, rule
        assert names <= connector | CONTROLLER_METRICS | COMPONENT_METRICS, (rule["alert"], names)


async def test_the_component_metrics_named_here_are_the_ones_the_edge_exports() -> None:
    http = httpx.AsyncClient()  # never used: metrics are read without a request
    component = ControllerComponent(
        kube=Kube.sharing(http), namespace="ns", settings=ControllerSettings(), version="1"
    )
    try:
        assert {name for name, *_ in component.samples()} == COMPONENT_METRICS
    finally:
        await http.aclose()
