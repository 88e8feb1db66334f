"""A project's NATS account limits, derived from its quotas and folded from its events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from access.nats_accounts import ProjectLimits
from access.nats_jwt import account_jwt, new_nkey
from access.project_accounts import (
    CONSUMERS_PER_CLUSTER,
    PROJECT_STREAMS,
    STORAGE_PER_CLUSTER,
    evolve_project_limits,
    holds_limits,
    project_limits,
)
from events.catalog import ProjectCreated, ProjectQuotasSet, ProjectSharesSet
from taskset.projects import ProjectQuotas

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def created(project: str, **quotas: int) -> ProjectCreated:
    return ProjectCreated(
        id=f"id-{project}",
        occurred_at=NOW,
        actor="admin",
        project=project,
        quotas=ProjectQuotas(**quotas),
    )


def quotas_set(project: str, **quotas: int) -> ProjectQuotasSet:
    return ProjectQuotasSet(
        id=f"q-{project}",
        occurred_at=NOW,
        actor="admin",
        project=project,
        quotas=ProjectQuotas(**quotas),
    )


@pytest.mark.parametrize(
    ("quotas", "limits"),
    [
        (ProjectQuotas(), ProjectLimits()),
        (ProjectQuotas(tasksets=10, log_bytes=1 << 30), ProjectLimits()),
        (
            ProjectQuotas(clusters=1),
            ProjectLimits(
                storage_bytes=STORAGE_PER_CLUSTER,
                memory_bytes=0,
                streams=1 + PROJECT_STREAMS,
                consumers=CONSUMERS_PER_CLUSTER,
            ),
        ),
        (
            ProjectQuotas(clusters=20, tasksets=3),
            ProjectLimits(
                storage_bytes=20 * 256 * (1 << 20), memory_bytes=0, streams=22, consumers=80
            ),
        ),
    ],
)
def test_account_limits_scale_with_the_cluster_quota(
    quotas: ProjectQuotas, limits: ProjectLimits
) -> None:
    assert project_limits(quotas) == limits


def test_project_events_fold_into_account_limits_and_the_default_project_is_left_alone() -> None:
    limits = evolve_project_limits({}, created("team-a", clusters=2))
    assert limits == {"team-a": project_limits(ProjectQuotas(clusters=2))}
    limits = evolve_project_limits(limits, quotas_set("team-a", clusters=5))
    assert limits["team-a"].consumers == 5 * CONSUMERS_PER_CLUSTER
    # Quotas of a project the fold never saw created, the default project, and other project
    # events change nothing.
    assert evolve_project_limits(limits, quotas_set("ghost", clusters=1)) == limits
    assert evolve_project_limits(limits, created("default", clusters=1)) == limits
    shares = ProjectSharesSet(
        id="s", occurred_at=NOW, actor="admin", project="team-a", tasksets=["team-a--web"]
    )
    assert evolve_project_limits(limits, shares) == limits


def test_a_held_jwt_matches_only_the_same_account_name_and_limits() -> None:
    account, operator = new_nkey("account"), new_nkey("operator")
    limits = project_limits(ProjectQuotas(clusters=2))
    token = account_jwt(account, operator, "project-a", iat=5, jetstream=limits.jetstream())
    assert holds_limits(token, "project-a", limits)
    assert not holds_limits(token, "project-b", limits)
    assert not holds_limits(token, "project-a", project_limits(ProjectQuotas(clusters=3)))
    assert not holds_limits(None, "project-a", limits)
    assert not holds_limits("not.a.jwt", "project-a", limits)
