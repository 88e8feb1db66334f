"""Projects: full names, and which project an object belongs to."""

from __future__ import annotations

import pytest

from taskset.errors import InvalidName
from taskset.projects import (
    DEFAULT_PROJECT,
    check_project_name,
    full_name,
    project_of,
    short_name,
)


@pytest.mark.parametrize(
    ("project", "name", "full"),
    [
        ("default", "web", "web"),
        ("team-a", "web", "team-a--web"),
        ("team-a", "team-a--web", "team-a--web"),
    ],
)
def test_a_name_in_a_project_has_one_full_name(project: str, name: str, full: str) -> None:
    assert full_name(project, "taskset", name) == full
    assert project_of(full) == project
    assert short_name(full) == name.removeprefix(f"{project}--")


def test_objects_written_before_projects_belong_to_the_default_project() -> None:
    assert project_of("web") == DEFAULT_PROJECT
    assert project_of("east-1") == DEFAULT_PROJECT
    assert short_name("web") == "web"


@pytest.mark.parametrize(
    ("project", "name", "reason"),
    [
        ("team-a", "team-b--web", "'--' is reserved"),
        ("team-a", "a--b", "'--' is reserved"),
        ("team-a", "Web", "use lowercase letters"),
        ("team-a", "x" * 60, "the limit is 63, so the name may have at most 55"),
    ],
)
def test_a_name_that_cannot_live_in_a_project_is_refused_saying_why(
    project: str, name: str, reason: str
) -> None:
    with pytest.raises(InvalidName, match=reason):
        full_name(project, "taskset", name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("a--b", "separates a project"), ("x" * 21, "the limit is 20"), ("A", "lowercase")],
)
def test_project_names_are_short_labels_without_the_separator(name: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason):
        check_project_name(name)
    assert check_project_name("team-a") == "team-a"
