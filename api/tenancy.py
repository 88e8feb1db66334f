"""The project a request acts in, and what of the hub it may see there.

The guard (`api.auth.requires`) decides which project a request acts in and that the caller
holds a role there; route handlers that touch named objects ask for it (`tenant: Tenant`, a
`TenantScope`) and go through it: names from the request become full names in that project
(`TenantScope.full`, which refuses another project's names), and lists keep only what the
project owns (`TenantScope.owns`). An object of another project is answered exactly as one
that does not exist, so a caller cannot even learn its name.

An org-level caller acting in the `default` project sees the whole hub, as every token did
before projects existed: lists show every project's objects (by full name, `team-a--web`) and
it may name any object by its full name. Naming another project narrows it to that project.

Events belong to the projects of the objects they name (`event_projects`): a taskset's events
to its project, a placement to the project of both its cluster and its taskset. Hub-wide events
(key rotation) name no project object and are shown to org-level callers only. Tasksets and
blueprints another project shares (`TenantScope.shared`) may be read and built on, never
changed, and show in this project's events only where they concern its own objects.

Quotas are checked here too (`admit_cluster`, `admit_publish`), before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec
from litestar import Request
from litestar.di import NamedDependency

from api.auth import PROJECT_STATE, Principal, principal_of
from api.context import Hub, HubContext
from api.errors import InvalidRequest, NotFound
from events.catalog import (
    Event,
    ProjectCreated,
    ProjectQuotasSet,
    ProjectSharesSet,
    TasksetPublished,
)
from projector import queries
from projector.errors import ProjectionMissing
from registry.clusters import list_clusters
from registry.errors import ProjectNotFound
from registry.projects import (
    ProjectRecord,
    check_quota,
    existing_project,
    list_projects,
    load_project,
)
from taskset.errors import InvalidName
from taskset.names import check_name
from taskset.projects import DEFAULT_PROJECT, SEPARATOR, full_name, project_of

NAME_FIELDS = ("cluster", "taskset", "blueprint", "source")
"""Event fields holding the full name of one object."""
NAME_LIST_FIELDS = ("clusters", "failed", "tasksets", "depends_on", "dependencies", "removed")
"""Event fields holding full names of several objects."""
CLUSTER_LIST_FIELDS = ("clusters", "failed")
ProjectEvent = ProjectCreated | ProjectQuotasSet | ProjectSharesSet


@dataclass(frozen=True)
class TenantScope:
    """The caller, and the project its request acts in."""

    principal: Principal
    project: ProjectRecord
    shared: frozenset[str] = frozenset()
    """Full names of the tasksets and blueprints other projects share read-only."""
    known: frozenset[str] = frozenset({DEFAULT_PROJECT})
    """Every project of the hub (the whole-hub view names objects of any of them)."""

    @property
    def name(self) -> str:
        return self.project.name

    @property
    def whole_hub(self) -> bool:
        """An org-level caller in the default project: it sees and names everything."""
        return self.principal.org_level and self.name == DEFAULT_PROJECT

    @property
    def view(self) -> str:
        """What this request may see, as a cache key: the whole hub, or one project."""
        return "*" if self.whole_hub else self.name

    def full(self, what: str, name: str) -> str:
        """The full name of `name` in this project; 400 for a name that cannot be one."""
        try:
            if self.whole_hub and SEPARATOR in name:
                check_name(what, name)
                if project_of(name) not in self.known:
                    raise InvalidName(what, name, f"there is no project {project_of(name)}")
                return name
            return full_name(self.name, what, name)
        except InvalidName as e:
            raise InvalidRequest(str(e), {what: name}) from e

    def owns(self, name: str) -> bool:
        return self.whole_hub or project_of(name) == self.name

    def readable(self, what: str, name: str) -> str:
        """`own`, or the full name of a taskset or blueprint another project shares."""
        if name in self.shared and not self.owns(name):
            return name
        return self.own(what, name)

    def owns_or_shared(self, name: str) -> bool:
        return self.owns(name) or name in self.shared

    def own(self, what: str, name: str) -> str:
        """`full`, for a name that must already be this project's (else 404, as if unknown)."""
        full = self.full(what, name)
        if not self.owns(full):
            raise NotFound(f"no {what} {name} in project {self.name}")
        return full

    def sees(self, event: Event) -> bool:
        """Whether this request may see `event`."""
        if self.whole_hub:
            return True
        clusters, others = event_names(event)
        if not clusters and not others:
            return isinstance(event, ProjectEvent) and event.project == self.name
        # Another project's shared taskset shows only in events about this project's own
        # objects (its placements here), never in its owner's (which name the owner's clusters).
        return (
            all(self.owns(n) for n in clusters)
            and all(self.owns_or_shared(n) for n in others)
            and any(self.owns(n) for n in (*clusters, *others))
        )


def event_names(event: Event) -> tuple[list[str], list[str]]:
    """The full names an event holds: (clusters, everything else)."""
    clusters: list[str] = []
    others: list[str] = []
    for field in NAME_FIELDS:
        value = getattr(event, field, None)
        if isinstance(value, str) and value:
            (clusters if field == "cluster" else others).append(value)
    for field in NAME_LIST_FIELDS:
        value = getattr(event, field, None)
        if isinstance(value, list):
            names = [item for item in value if isinstance(item, str)]
            (clusters if field in CLUSTER_LIST_FIELDS else others).extend(names)
    return clusters, others


def event_projects(event: Event) -> set[str]:
    """The projects of the objects `event` names (empty: a hub-wide event)."""
    if isinstance(event, ProjectEvent):
        return {event.project}
    clusters, others = event_names(event)
    return {project_of(name) for name in (*clusters, *others)}


async def provide_tenant(request: Request[Any, Any, Any], hub: Hub) -> TenantScope:
    """The `tenant` of a request whose guard is `requires(...)` (not org-only)."""
    principal = principal_of(request)
    project = request.scope.get("state", {}).get(PROJECT_STATE, DEFAULT_PROJECT)
    record = hub.projects.get(project)
    if record is None:
        try:
            record = await existing_project(hub.store, project)
        except ProjectNotFound as e:
            raise NotFound(str(e), {"project": project}) from e
        hub.projects[project] = record
    if hub.project_list is None:
        hub.project_list = await list_projects(hub.store)
    return TenantScope(
        principal=principal,
        project=record,
        shared=shared_names(hub.project_list),
        known=frozenset(p.name for p in hub.project_list),
    )


def shared_names(projects: list[ProjectRecord]) -> frozenset[str]:
    """Every taskset and blueprint some project shares."""
    return frozenset(name for p in projects for name in (*p.shared_tasksets, *p.shared_blueprints))


Tenant: TypeAlias = NamedDependency[TenantScope]
"""How a route handler asks for the project its request acts in: `tenant: Tenant`."""


class ProjectUsage(msgspec.Struct, frozen=True, kw_only=True):
    """What a project holds now, against its quotas."""

    clusters: int
    tasksets: int
    log_bytes: int


async def project_usage(hub: HubContext, project: str) -> ProjectUsage:
    """Registered clusters (from the log), live tasksets and their log bytes (read models)."""
    clusters = [c for c in await list_clusters(hub.store) if project_of(c.name) == project]
    try:
        async with hub.read_models() as db:
            tasksets = await queries.tasksets(db, include_retired=False)
            sizes = await queries.taskset_log_bytes(db)
    except ProjectionMissing:
        tasksets, sizes = [], {}
    return ProjectUsage(
        clusters=len(clusters),
        tasksets=sum(1 for t in tasksets if project_of(t.name) == project),
        log_bytes=sum(size for name, size in sizes.items() if project_of(name) == project),
    )


async def admit_cluster(hub: HubContext, cluster: str) -> None:
    """Refuse registering `cluster` when its project is at its cluster quota."""
    record, _ = await load_project(hub.store, project_of(cluster))
    if record.quotas.clusters:
        usage = await project_usage(hub, record.name)
        check_quota(record, "clusters", usage.clusters)


async def admit_publish(hub: HubContext, events: Sequence[Event]) -> None:
    """Refuse a publish that would take its project past its taskset or log quota."""
    for event in events:
        if not isinstance(event, TasksetPublished):
            continue
        record, _ = await load_project(hub.store, project_of(event.taskset))
        if not (record.quotas.tasksets or record.quotas.log_bytes):
            continue
        usage = await project_usage(hub, record.name)
        try:
            async with hub.read_models() as db:
                live = {t.name for t in await queries.tasksets(db, include_retired=False)}
        except ProjectionMissing:
            live = set()
        check_quota(record, "tasksets", usage.tasksets, 0 if event.taskset in live else 1)
        check_quota(record, "log_bytes", usage.log_bytes, event.body_size)
