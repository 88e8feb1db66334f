"""Per-cluster blueprint sync status, a pure function of projected rows, as a table."""

from __future__ import annotations

import pytest

from projector.blueprint_sync import (
    BlueprintVersionRow,
    ClusterSync,
    EntryStatus,
    SyncState,
    behind,
    members,
    sync_status,
)
from taskset.blueprints import BlueprintEntry


def version(number: int, *entries: BlueprintEntry) -> BlueprintVersionRow:
    return BlueprintVersionRow(
        blueprint="prod",
        version=number,
        digest=f"d{number}",
        entries=list(entries),
        selector="env=prod",
        drift_policy="",
        base="",
        base_version=0,
        published_at="2026-12-01T10:00:00+00:00",
        actor="user:test",
        event_id=f"e{number}",
    )


VERSIONS = {
    1: version(1, BlueprintEntry(taskset="crds", version=1)),
    2: version(
        2,
        BlueprintEntry(taskset="crds", version=2),
        BlueprintEntry(taskset="ingress", depends_on=["crds"]),
    ),
}
LATEST = {"crds": 2, "ingress": 5}


def applied(v: int, generation: int = 1) -> EntryStatus:
    return EntryStatus(
        desired_version=v,
        desired_generation=generation,
        applied_version=v,
        applied_generation=generation,
        state="applied",
    )


@pytest.mark.parametrize(
    ("pinned", "statuses", "expected"),
    [
        (0, {"crds": applied(2), "ingress": applied(5)}, ("in_sync", "", "")),
        (
            0,
            {"crds": applied(2)},
            ("updating", "ingress", "v5 not yet scheduled"),
        ),
        (
            0,
            {
                "crds": applied(2),
                "ingress": EntryStatus(hold="Waiting", hold_reason="waiting: crds v2 …"),
            },
            ("updating", "ingress", "waiting: crds v2 …"),
        ),
        (
            0,
            {
                "crds": EntryStatus(desired_version=2, state="failed", error="CRD invalid"),
                "ingress": EntryStatus(hold="Blocked", hold_reason="dependency crds v2 failed"),
            },
            ("failed", "crds", "CRD invalid"),
        ),
        (
            0,
            {
                "crds": applied(2),
                "ingress": EntryStatus(
                    desired_version=5,
                    desired_generation=2,
                    applied_version=5,
                    applied_generation=1,
                    state="applying",
                ),
            },
            ("updating", "ingress", "v5 not yet applied"),
        ),
        (1, {"crds": applied(1)}, ("out_of_date", "", "pinned to v1, latest is v2")),
        (
            0,
            {"crds": applied(1), "ingress": applied(5)},
            ("updating", "crds", "v2 not yet scheduled"),
        ),
    ],
)
def test_sync_status_names_the_first_entry_not_in_sync_and_why(
    pinned: int, statuses: dict[str, EntryStatus], expected: tuple[str, str, str]
) -> None:
    status = sync_status("c1", "prod", VERSIONS, pinned, LATEST, statuses)
    assert (status.state, status.entry, status.reason) == expected
    assert status.version == (pinned or 2)


def test_members_are_assigned_clusters_and_those_the_selector_matches() -> None:
    labels = {"a": {"env": "prod"}, "b": {"env": "dev"}, "c": {"env": "dev"}}
    assert members("env=prod", labels, {"c": 0, "gone": 1}) == ["a", "c"]


def test_behind_lists_clusters_on_another_version_or_not_in_sync() -> None:
    def row(cluster: str, v: int, state: SyncState) -> ClusterSync:
        return ClusterSync(
            cluster=cluster, blueprint="prod", version=v, latest=2, pinned=False, state=state
        )

    rows = [row("a", 2, "in_sync"), row("b", 1, "out_of_date"), row("c", 2, "updating")]
    assert [r.cluster for r in behind(rows, 2)] == ["b", "c"]
