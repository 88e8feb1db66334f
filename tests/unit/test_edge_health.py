"""Connector readiness is a pure decision over what the leaf and the connector say."""

from __future__ import annotations

import pytest

from edge_connector.health import (
    ConnectorProgress,
    HubLinkState,
    companions_readiness,
    connector_readiness,
    edge_readiness,
    immediate_send_delay,
)
from events.inventory import ControllerStatus
from fleetbus.probes import health_address, prometheus_text

LINKED = HubLinkState(connected=True, detail="hub:7422", mirror_last_seq=10)


def progress(
    *, delivered: int = 10, feed_pending: int = 0, outbox_pending: int = 0
) -> ConnectorProgress:
    return ConnectorProgress(
        delivered_seq=delivered,
        feed_pending=feed_pending,
        outbox_pending=outbox_pending,
        held=3,
        failing=0,
        reported=7,
    )


@pytest.mark.parametrize(
    ("link", "seen", "ready", "reason"),
    [
        (LINKED, progress(), True, "connected to the hub (hub:7422) and caught up"),
        (
            HubLinkState(connected=False, detail="the leaf has no link to the hub"),
            progress(),
            False,
            "not connected to the hub: the leaf has no link to the hub",
        ),
        (
            HubLinkState(connected=True, detail="h", mirror_last_seq=10, mirror_lag=4),
            progress(),
            False,
            "desired state mirror 4 message(s) behind the hub",
        ),
        (LINKED, progress(delivered=7), False, "3 desired state message(s) not yet read"),
        (LINKED, progress(feed_pending=2), False, "2 desired state message(s) still to be read"),
        (LINKED, progress(outbox_pending=5), False, "5 report(s) not yet stored in the outbox"),
    ],
)
def test_the_connector_is_ready_only_when_connected_and_caught_up(
    link: HubLinkState, seen: ConnectorProgress, ready: bool, reason: str
) -> None:
    answer = connector_readiness(link, seen)
    assert answer[0] is ready
    assert answer[1].startswith(reason), answer


def test_metrics_are_prometheus_text_with_escaped_labels() -> None:
    text = prometheus_text(
        [
            ("a_total", "counter", "A count.", 3, {}),
            ("b", "gauge", "B.", 0.5, {"who": 'x"y\\z'}),
            ("b", "gauge", "B.", True, {"who": "w"}),
        ]
    )
    assert text == (
        "# HELP a_total A count.\n# TYPE a_total counter\na_total 3\n"
        '# HELP b B.\n# TYPE b gauge\nb{who="x\\"y\\\\z"} 0.5\nb{who="w"} 1\n'
    )


def test_the_health_address_is_host_port_or_off() -> None:
    assert health_address("10.0.0.7:8081") == ("10.0.0.7", 8081)
    assert health_address(":0") == ("127.0.0.1", 0)
    assert health_address("[::1]:9") == ("::1", 9)
    assert health_address("off") is None
    for bad in ("8081", "host:", "host:99999"):
        with pytest.raises(Exception, match="expected HOST:PORT or off"):
            health_address(bad)


class FixedCompanion:
    def __init__(self, name: str, healthy: bool, reason: str) -> None:
        self._name = name
        self._answer = (healthy, reason)

    @property
    def name(self) -> str:
        return self._name

    def health(self) -> tuple[bool, str]:
        return self._answer


def test_a_failing_companion_is_named_in_the_readiness_reason() -> None:
    companions = [
        FixedCompanion("controller", True, "watches synced"),
        FixedCompanion("other", False, "failed (watch refused); starting again in 2.0s"),
    ]
    assert companions_readiness(companions) == (
        False,
        "other not ready: failed (watch refused); starting again in 2.0s",
    )
    assert companions_readiness(companions[:1]) == (True, "")
    assert companions_readiness([]) == (True, "")


@pytest.mark.parametrize(
    ("last_sent", "now", "gap", "delay"),
    [
        (None, 100.0, 1.0, 0.0),
        (99.0, 100.0, 1.0, 0.0),
        (95.0, 100.0, 1.0, 0.0),
        (99.25, 100.0, 1.0, 0.25),
        (100.0, 100.0, 1.0, 1.0),
        (100.0, 100.0, 0.0, 0.0),
    ],
)
def test_a_digest_asked_for_at_once_waits_out_the_gap_since_the_last(
    last_sent: float | None, now: float, gap: float, delay: float
) -> None:
    assert immediate_send_delay(last_sent, now, gap) == delay


def test_edge_readiness_is_the_connectors_and_the_controllers_not_their_wording() -> None:
    waiting = ControllerStatus(ready=False, reason="watches not synced yet: tasks")
    synced = ControllerStatus(ready=True, reason="controller a: watches synced")
    assert edge_readiness(True, None) == (True, None)
    assert edge_readiness(True, waiting) == (True, False)
    assert edge_readiness(True, synced) != edge_readiness(True, waiting)
    assert edge_readiness(False, synced) != edge_readiness(True, synced)
    reworded = ControllerStatus(ready=True, reason="controller b: watches synced")
    assert edge_readiness(True, reworded) == edge_readiness(True, synced)
