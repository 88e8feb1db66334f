"""Which events and names a request may see in its project (`api.tenancy`), and project tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.auth import Principal, Role, TokenStore
from api.errors import ApiError
from api.tenancy import TenantScope, event_projects
from events.catalog import Event, KeysRotated, ProjectCreated, RolloutHalted
from registry.projects import ProjectRecord
from tests.scheduler_fixtures import envelope, published, registered
from tests.scheduler_fixtures import make_taskset as taskset

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def scope(project: str, *, org: bool = False, shared: frozenset[str] = frozenset()) -> TenantScope:
    principal = Principal(
        token_id="t", name="n", role=Role.viewer, project=None if org else project, org_level=org
    )
    return TenantScope(
        principal=principal,
        project=ProjectRecord(name=project, exists=True),
        shared=shared,
        known=frozenset({"default", "team-a", "team-b"}),
    )


def halted(taskset_name: str, *failed: str) -> RolloutHalted:
    return RolloutHalted(
        **envelope(), taskset=taskset_name, taskset_version=1, wave=0, failed=list(failed)
    )


EVENTS: list[tuple[str, Event, dict[str, bool]]] = [
    ("a's cluster", registered("team-a--east"), {"team-a": True, "team-b": False}),
    ("default's cluster", registered("east"), {"default": True, "team-a": False}),
    (
        "a's taskset failing on b's cluster",
        halted("team-a--web", "team-b--east"),
        {"team-a": False, "team-b": False},
    ),
    (
        "a's shared taskset on b's cluster",
        halted("team-a--web", "team-b--east"),
        {"team-b (shared)": True},
    ),
    (
        "a's shared taskset published",
        published(taskset("team-a--web"), 1),
        {"team-a": True, "team-b (shared)": False},
    ),
    (
        "a project's creation",
        ProjectCreated(**envelope(), project="team-a"),
        {"team-a": True, "team-b": False},
    ),
    ("a hub-wide event", KeysRotated(**envelope(), kek="k2"), {"default": False, "team-a": False}),
]


@pytest.mark.parametrize(("what", "event", "visible"), EVENTS, ids=[e[0] for e in EVENTS])
def test_an_event_is_seen_only_in_the_projects_of_everything_it_names(
    what: str, event: Event, visible: dict[str, bool]
) -> None:
    for who, expected in visible.items():
        project = who.removesuffix(" (shared)")
        shared = frozenset({"team-a--web"}) if who.endswith("(shared)") else frozenset()
        assert scope(project, shared=shared).sees(event) is expected, f"{what} as {who}"
    assert scope("default", org=True).sees(event), "the whole-hub view sees every event"


def test_the_projects_of_an_event_are_those_of_its_names() -> None:
    assert event_projects(halted("team-a--web", "team-b--east", "east")) == {
        "team-a",
        "team-b",
        "default",
    }


def test_names_resolve_in_the_project_and_other_projects_names_are_refused() -> None:
    a = scope("team-a")
    assert a.full("taskset", "web") == "team-a--web"
    assert a.own("taskset", "team-a--web") == "team-a--web"
    with pytest.raises(ApiError, match="'--' is reserved"):
        a.full("taskset", "team-b--web")
    assert scope("team-b", shared=frozenset({"team-a--web"})).readable(
        "taskset", "team-a--web"
    ) == ("team-a--web")
    whole = scope("default", org=True)
    assert whole.full("cluster", "team-b--east") == "team-b--east"
    with pytest.raises(ApiError, match="there is no project ghost"):
        whole.full("cluster", "ghost--east")


async def test_token_names_are_unique_per_project(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    await store.create(role=Role.admin, name="ci", now=NOW)
    await store.create(role=Role.viewer, name="ci", project="team-a", now=NOW)
    with pytest.raises(ApiError, match="a token named 'ci' exists already in project team-a"):
        await store.create(role=Role.viewer, name="ci", project="team-a", now=NOW)
    with pytest.raises(ApiError, match=r"2 tokens are named 'ci' \(org level, team-a\)"):
        await store.revoke("ci")
    revoked = await store.revoke("ci", "team-a")
    assert revoked.project == "team-a"
    assert [(r.name, r.project) for r in await store.list()] == [("ci", None)]
