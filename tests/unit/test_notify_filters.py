"""Notification filters by project: an event is about the projects of the objects it names."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from events.catalog import DriftDetected, KeysRotated, ProjectCreated
from events.ids import new_event_id
from notify.errors import InvalidSubscription
from notify.model import Filters, check_filters, projects_of
from tests.scheduler_fixtures import registered

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def drift(cluster: str, taskset: str) -> DriftDetected:
    return DriftDetected(
        id=new_event_id(),
        occurred_at=NOW,
        actor="edge",
        cluster=cluster,
        taskset=taskset,
        object="v1/ConfigMap/apps/x",
    )


def test_a_project_filter_keeps_the_events_about_that_projects_objects_only() -> None:
    team_a = Filters(projects=["team-a"])
    assert team_a.matches(drift("team-a--east", "team-a--web"))
    assert team_a.matches(registered("team-a--east"))
    assert not team_a.matches(drift("team-b--east", "team-b--web"))
    assert not team_a.matches(drift("east", "web")), "bare names are the default project's"
    assert Filters(projects=["default"]).matches(drift("east", "web"))
    created = ProjectCreated(id=new_event_id(), occurred_at=NOW, actor="org", project="team-a")
    assert team_a.matches(created)
    assert not Filters(projects=["team-b"]).matches(created)


def test_an_event_about_the_whole_hub_matches_no_project_filter() -> None:
    rotated = KeysRotated(id=new_event_id(), occurred_at=NOW, actor="org", kek="kek-1")
    assert projects_of(rotated) == set()
    assert not Filters(projects=["default"]).matches(rotated)
    assert Filters().matches(rotated)


@pytest.mark.parametrize("project", ["Team-A", "a--b", "x" * 21])
def test_a_project_filter_that_cannot_name_a_project_is_refused(project: str) -> None:
    with pytest.raises(InvalidSubscription, match="projects"):
        check_filters(Filters(projects=[project]))
