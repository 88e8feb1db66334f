"""Who may lead: the Lease rule, decided on the Lease's own times and a given `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cluster_controller.leader import decide_lease, micro_time

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def lease(holder: str, renewed_ago: float, duration: int = 15) -> dict[str, object]:
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration,
        "renewTime": micro_time(NOW - timedelta(seconds=renewed_ago)),
    }


def test_a_missing_lease_is_taken() -> None:
    assert decide_lease(None, "me", NOW) == "take"


def test_our_own_lease_is_renewed() -> None:
    assert decide_lease(lease("me", 100), "me", NOW) == "renew"


def test_a_lease_someone_renewed_recently_is_waited_for() -> None:
    assert decide_lease(lease("other", 5), "me", NOW) == "wait"


def test_a_lease_not_renewed_for_a_whole_duration_is_taken() -> None:
    assert decide_lease(lease("other", 16), "me", NOW) == "take"


def test_a_released_lease_is_taken() -> None:
    assert decide_lease(lease("", 1), "me", NOW) == "take"
