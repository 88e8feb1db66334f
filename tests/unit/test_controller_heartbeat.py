"""The controller's heartbeat Lease and the connector's verdict on it are pure: table tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge_connector.health import NO_CONTROLLER, controller_status
from kube_contract.controller_status import (
    ANNOTATION_CONTROLLER_STATUS,
    LABEL_CONTROLLER_STATUS,
    ControllerHeartbeat,
    ControllerRole,
    ReplicaHeartbeat,
    heartbeat_lease,
    lease_name,
    read_heartbeat,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SYNCED = {"tasks": True, "tasklets": True, "steps": True, "fleetnamespaces": True}


def beat(
    name: str,
    *,
    role: ControllerRole = "single",
    ready: bool = True,
    live: bool = True,
    reason: str = "watches synced",
    age_s: float = 1.0,
    duration_s: int = 30,
    watches: dict[str, bool] | None = None,
    last_error: str = "",
    error_age_s: float = 0.0,
) -> ReplicaHeartbeat:
    return ReplicaHeartbeat(
        name=name,
        renewed_at=NOW - timedelta(seconds=age_s),
        duration_s=duration_s,
        heartbeat=ControllerHeartbeat(
            version="1.2.3",
            role=role,
            live=live,
            ready=ready,
            reason=reason,
            watches=SYNCED if watches is None else watches,
            last_error=last_error,
            last_error_at=NOW - timedelta(seconds=error_age_s) if last_error else None,
        ),
    )


@pytest.mark.parametrize(
    ("replicas", "ready", "reason"),
    [
        ([], False, NO_CONTROLLER),
        ([beat("c-1")], True, "controller c-1: watches synced"),
        (
            [
                beat(
                    "c-1",
                    ready=False,
                    reason="watches not synced yet: steps",
                    watches={"steps": False},
                )
            ],
            False,
            "controller c-1: watches not synced yet: steps",
        ),
        (
            [beat("c-1", age_s=95)],
            False,
            "the cluster controller has not reported since 95s ago: replica c-1 stopped or "
            "cannot reach the Kubernetes API (it last said: watches synced)",
        ),
        (
            [beat("c-1", live=False, ready=False, reason="stopped: asked to stop")],
            False,
            "controller c-1: stopped: asked to stop",
        ),
        (
            [beat("c-1", live=False, ready=False, reason="stopped: asked to stop", age_s=40)],
            False,
            "the cluster controller stopped 40s ago: controller c-1: stopped: asked to stop",
        ),
        (
            [beat("a", role="standby", reason="standby: another replica holds the leader Lease")],
            False,
            "no controller replica reconciles: 1 standing by for the leader Lease",
        ),
        (
            [
                beat("old", role="leader", age_s=600),
                beat("b", role="standby"),
                beat("a", role="leader"),
            ],
            True,
            "controller a: watches synced",
        ),
    ],
    ids=[
        "none",
        "ready",
        "not-synced",
        "stale",
        "stopped",
        "stopped-long-ago",
        "standby-only",
        "leader-among-many",
    ],
)
def test_the_connector_judges_the_controller_from_its_heartbeats(
    replicas: list[ReplicaHeartbeat], ready: bool, reason: str
) -> None:
    status = controller_status(replicas, NOW)
    assert (status.ready, status.reason) == (ready, reason)
    assert len(status.replicas) == len(replicas)


def test_the_verdict_names_the_leader_its_version_watches_and_the_newest_error() -> None:
    status = controller_status(
        [
            beat("a", role="leader", last_error="reconcile of ns/web failed: 500", error_age_s=5),
            beat("b", role="standby", last_error="watch of steps ended: gone", error_age_s=50),
        ],
        NOW,
    )
    assert status.leader == "a"
    assert status.version == "1.2.3"
    assert status.watches_synced is True
    assert status.last_error == "reconcile of ns/web failed: 500"
    assert status.last_error_at == NOW - timedelta(seconds=5)
    assert [r.name for r in status.replicas] == ["a", "b"]
    assert [r.role for r in status.replicas] == ["leader", "standby"]


def test_a_replica_whose_lease_ran_out_is_stale_and_not_ready_whatever_it_last_said() -> None:
    (replica,) = controller_status([beat("c-1", age_s=31)], NOW).replicas
    assert replica.stale
    assert not replica.ready


def test_heartbeats_that_cannot_be_read_are_reported_as_such() -> None:
    status = controller_status([], NOW, error="listing Leases in ns answered 403: forbidden")
    assert not status.ready
    assert status.reason == (
        "cannot read the controller's heartbeat: listing Leases in ns answered 403: forbidden"
    )


def test_the_heartbeat_lease_round_trips_and_a_garbled_one_is_a_problem_not_a_crash() -> None:
    said = ControllerHeartbeat(version="1.0", role="leader", ready=True, reason="watches synced")
    lease = heartbeat_lease(
        instance="Node_A/pod-1", namespace="fleetbus-system", heartbeat=said, now=NOW, duration_s=30
    )
    assert lease["metadata"]["name"] == "fleetbus-controller-status-node-a-pod-1"
    assert lease["metadata"]["labels"] == {LABEL_CONTROLLER_STATUS: "true"}
    read = read_heartbeat(lease)
    assert read == ReplicaHeartbeat(
        name="Node_A/pod-1", renewed_at=NOW, duration_s=30, heartbeat=said
    )

    lease["metadata"]["annotations"][ANNOTATION_CONTROLLER_STATUS] = '{"ready": "yes"}'
    garbled = read_heartbeat(lease)
    assert garbled.heartbeat is None
    assert "unreadable heartbeat" in garbled.problem
    verdict = controller_status([garbled], NOW)
    assert not verdict.ready
    assert "unreadable heartbeat" in verdict.replicas[0].reason


def test_lease_names_are_dns_names_within_the_limit() -> None:
    assert lease_name("..") == "fleetbus-controller-status-controller"
    assert len(lease_name("x" * 400)) <= 253
