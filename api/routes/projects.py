"""`/api/v1/projects`: the hub's tenants, their quotas and what they use.

Org admins create projects and set quotas. A caller sees the projects it holds a role in (an
org-level caller sees them all), never the names of the others.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post, put
from litestar.params import JSONBody, PathParameter

from api.auth import Principal, Role, principal_of, requires
from api.context import Hub
from api.errors import InvalidRequest, NotFound, ServiceUnavailable
from api.tenancy import ProjectUsage, Tenant, project_usage
from projector import queries
from projector.blueprint_sync import blueprint_versions as read_versions
from registry.errors import ProjectNotFound
from registry.projects import (
    MAX_DESCRIPTION,
    ProjectRecord,
    create_project,
    existing_project,
    list_projects,
    project_subject,
    set_project_quotas,
    set_project_shares,
)
from taskset.projects import ProjectQuotas

NameParam = Annotated[str, PathParameter(max_length=63)]
ACCOUNT_TIMEOUT_S = 30.0


async def wait_project_account(hub: Hub, name: str) -> None:
    """Answer once the project's NATS account holds what its events say, on every server."""
    if hub.project_accounts is None:
        return
    seq = await hub.store.subject_version(project_subject(name))
    try:
        async with asyncio.timeout(ACCOUNT_TIMEOUT_S):
            await hub.project_accounts.wait_applied(seq)
    except TimeoutError as e:
        raise ServiceUnavailable(
            f"project {name} is recorded, but its NATS account did not reach every NATS server "
            f"within {ACCOUNT_TIMEOUT_S:.0f} s; the hub keeps trying (see its log)"
        ) from e


class NewProject(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=63)]
    description: Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)] = ""
    quotas: ProjectQuotas = msgspec.field(default_factory=ProjectQuotas)


class ProjectView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    quotas: ProjectQuotas
    created_at: datetime | None = None
    created_by: str = ""
    usage: ProjectUsage | None = None
    """What it holds now (in the answer about one project)."""
    shared_tasksets: list[str] = msgspec.field(default_factory=list)
    """Full names of its tasksets other projects may use read-only."""
    shared_blueprints: list[str] = msgspec.field(default_factory=list)


class Shares(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly what a project shares (names in the project); the rest stops being shared."""

    tasksets: list[Annotated[str, msgspec.Meta(max_length=63)]] = msgspec.field(
        default_factory=list
    )
    blueprints: list[Annotated[str, msgspec.Meta(max_length=63)]] = msgspec.field(
        default_factory=list
    )


def project_view(record: ProjectRecord, usage: ProjectUsage | None = None) -> ProjectView:
    return ProjectView(
        name=record.name,
        description=record.description,
        quotas=record.quotas,
        created_at=record.created_at,
        created_by=record.created_by,
        usage=usage,
        shared_tasksets=record.shared_tasksets,
        shared_blueprints=record.shared_blueprints,
    )


def visible(principal: Principal, project: str) -> bool:
    return principal.role_in(project) is not None


@post(
    "/api/v1/projects",
    guards=[requires(Role.admin, org=True)],
    tags=["projects"],
    summary="Create a project (org admins)",
    status_code=201,
)
async def create(
    request: Request[Any, Any, Any], hub: Hub, data: JSONBody[NewProject]
) -> ProjectView:
    record = await create_project(
        hub.store,
        data.name,
        description=data.description,
        quotas=data.quotas,
        actor=principal_of(request).actor,
        now=datetime.now(UTC),
    )
    hub.projects[record.name] = record
    hub.project_list = None
    await wait_project_account(hub, record.name)
    return project_view(record)


@get(
    "/api/v1/projects",
    guards=[requires(Role.viewer)],
    tags=["projects"],
    summary="The projects the caller holds a role in (every project for org-level callers)",
)
async def list_(request: Request[Any, Any, Any], hub: Hub) -> list[ProjectView]:
    principal = principal_of(request)
    return [
        project_view(record)
        for record in await list_projects(hub.store)
        if visible(principal, record.name)
    ]


@get(
    "/api/v1/projects/{name:str}",
    guards=[requires(Role.viewer)],
    tags=["projects"],
    summary="One project: its quotas and what it uses of them",
)
async def show(request: Request[Any, Any, Any], hub: Hub, name: NameParam) -> ProjectView:
    principal = principal_of(request)
    if not visible(principal, name):
        raise NotFound(f"no project named {name}")
    try:
        record = await existing_project(hub.store, name)
    except ProjectNotFound as e:
        raise NotFound(str(e)) from e
    return project_view(record, await project_usage(hub, name))


@put(
    "/api/v1/projects/{name:str}/quotas",
    guards=[requires(Role.admin, org=True)],
    tags=["projects"],
    summary="Set a project's quotas (org admins); 0 means no limit",
)
async def set_quotas(
    request: Request[Any, Any, Any], hub: Hub, name: NameParam, data: JSONBody[ProjectQuotas]
) -> ProjectView:
    record = await set_project_quotas(
        hub.store, name, data, actor=principal_of(request).actor, now=datetime.now(UTC)
    )
    hub.projects[record.name] = record
    hub.project_list = None
    await wait_project_account(hub, record.name)
    return project_view(record, await project_usage(hub, name))


@put(
    "/api/v1/projects/{name:str}/shares",
    guards=[requires(Role.admin)],
    tags=["projects"],
    summary="Share tasksets and blueprints read-only with every other project (project admins)",
    description="Other projects then list them, read them, and may build their blueprints on "
    "them (as entries or as a base); they cannot change them. The body says exactly what is "
    "shared: what it leaves out stops being shared (what already runs stays).",
)
async def set_shares(
    hub: Hub, tenant: Tenant, name: NameParam, data: JSONBody[Shares]
) -> ProjectView:
    if name != tenant.name:
        raise NotFound(f"no project named {name}")
    tasksets = [tenant.own("taskset", t) for t in data.tasksets]
    blueprints = [tenant.own("blueprint", b) for b in data.blueprints]
    async with hub.read_models() as db:
        published = {row.name for row in await queries.tasksets(db, include_retired=False)}
        known_blueprints = {row.blueprint for row in await read_versions(db)}
    unknown = [t for t in tasksets if t not in published] + [
        b for b in blueprints if b not in known_blueprints
    ]
    if unknown:
        raise InvalidRequest(
            f"nothing published is named {', '.join(unknown)} in project {tenant.name}; "
            "publish it first, then share it",
            {"unknown": unknown},
        )
    record = await set_project_shares(
        hub.store,
        tenant.name,
        tasksets,
        blueprints,
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )
    hub.projects[record.name] = record
    hub.project_list = None
    await wait_project_account(hub, record.name)
    return project_view(record)


ROUTES = [create, list_, show, set_quotas, set_shares]
