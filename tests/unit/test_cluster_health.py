"""Cluster health from what the hub heard last, and when a change is worth recording (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events.catalog import ClusterHealthChanged
from events.inventory import ControllerStatus, EdgeStatus
from notify.model import severity_of
from scheduler.cluster_health import WELL, Health, decide_health, observe_health

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CONTROLLER_DOWN = ControllerStatus(ready=False, reason="the cluster controller has not reported")


@pytest.mark.parametrize(
    ("seen_ago", "edge", "healthy", "connected", "reason"),
    [
        (10, EdgeStatus(ready=True, reason="caught up"), True, True, "connected, connector ready"),
        (
            10,
            EdgeStatus(ready=True, controller=ControllerStatus(ready=True)),
            True,
            True,
            "connected, connector ready, cluster controller ready",
        ),
        (
            10,
            EdgeStatus(ready=True, controller=CONTROLLER_DOWN),
            False,
            True,
            "cluster controller: the cluster controller has not reported",
        ),
        (
            10,
            EdgeStatus(ready=False, reason="2 report(s) not yet stored in the outbox"),
            False,
            True,
            "connector: 2 report(s) not yet stored in the outbox",
        ),
        (10, None, True, True, "connected"),
        (
            91,
            EdgeStatus(ready=True),
            False,
            False,
            "no inventory digest for 91s: its edge is down or cut from the hub",
        ),
    ],
    ids=["ready", "with-controller", "controller-down", "connector-behind", "old-edge", "silent"],
)
def test_health_is_judged_from_the_last_digest_and_how_long_ago_it_came(
    seen_ago: int, edge: EdgeStatus | None, healthy: bool, connected: bool, reason: str
) -> None:
    health = observe_health(NOW - timedelta(seconds=seen_ago), edge, NOW)
    assert health is not None
    assert (health.healthy, health.connected, health.reason) == (healthy, connected, reason)


def test_a_cluster_never_heard_from_gets_no_verdict() -> None:
    assert observe_health(None, None, NOW) is None


def test_a_change_is_recorded_once_it_lasted_the_settle_time_and_a_return_too() -> None:
    down = Health(healthy=False, connected=False, reason="silent")
    settle = timedelta(seconds=30)
    assert decide_health(None, WELL, None, NOW, settle=settle) == (False, None)
    assert decide_health(None, down, None, NOW, settle=settle) == (False, NOW)
    later = NOW + timedelta(seconds=29)
    assert decide_health(None, down, NOW, later, settle=settle) == (False, NOW)
    assert decide_health(None, down, NOW, NOW + settle, settle=settle) == (True, NOW)
    # Recorded down: the same state again is no news, whatever its words; being well is.
    reworded = Health(healthy=False, connected=False, reason="silent for longer")
    assert decide_health(down, reworded, None, NOW, settle=settle) == (False, None)
    assert decide_health(down, WELL, NOW, NOW + settle, settle=settle) == (True, NOW)
    # A blip shorter than the settle time that ends is forgotten.
    assert decide_health(WELL, WELL, NOW, later, settle=settle) == (False, None)


def test_health_events_are_warnings_when_unhealthy_and_news_when_well_again() -> None:
    def event(healthy: bool) -> ClusterHealthChanged:
        return ClusterHealthChanged(
            id="e", occurred_at=NOW, actor="hub", cluster="c", healthy=healthy, connected=healthy
        )

    assert severity_of(event(False)) == "warning"
    assert severity_of(event(True)) == "info"
