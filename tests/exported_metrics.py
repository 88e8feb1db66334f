"""The names of every metric fleetbus exports, per process, as Prometheus stores their samples.

Read from the code that exports them (the hub's registry with its notification collector, the
connector's and the controller's sample lists), so the shipped dashboards and alert rules can be
checked against what really exists. The controller's list is checked against a running
controller's samples in `tests/integration/test_controller_cli.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from api.metrics import HubMetrics, NotificationCollector
from edge_connector.health import (
    ConnectorProgress,
    HubLinkState,
    connector_metrics,
    controller_status,
)
from notify.model import Subscription

CONTROLLER_METRICS = {
    "fleetbus_controller_info",
    "fleetbus_controller_ready",
    "fleetbus_controller_leader",
    "fleetbus_controller_reconciles_total",
    "fleetbus_controller_queue_depth",
    "fleetbus_controller_watched_kinds",
    "fleetbus_controller_watch_synced",
}
"""What `cluster_controller.health.ControllerHealth.samples` exports."""

COMPONENT_METRICS = {"fleetbus_edge_component_up", "fleetbus_edge_component_restarts_total"}
"""What the edge process adds for the controller it runs (`fleetbus.edge_controller`)."""


class NoDeliveries:
    def delivery_counts(self) -> list[tuple[Subscription, int, int, int]]:
        return []


def sample_names(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


def hub_metrics() -> set[str]:
    metrics = HubMetrics()
    metrics.registry.register(NotificationCollector(NoDeliveries()))
    names: set[str] = set()
    for family in metrics.registry.collect():
        names |= sample_names(family.name, family.type)
    return names


def edge_metrics() -> set[str]:
    """The connector's samples, with the controller's health it judged."""
    samples = connector_metrics(
        "c",
        "1",
        HubLinkState(connected=True, detail=""),
        ConnectorProgress(
            delivered_seq=0, feed_pending=0, outbox_pending=0, held=0, failing=0, reported=0
        ),
        True,
        controller_status([], datetime.now(UTC)),
    )
    return {name for name, *_ in samples}
