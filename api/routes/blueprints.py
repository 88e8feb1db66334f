"""`/api/v1/blueprints`: publish, list, show, compare, assign and force-sync blueprints, and
see which clusters are in sync.

Publishing takes the blueprint document a user writes (see `taskset.blueprints.parse_blueprint`)
and is decided by `registry.blueprints`; sync status is read from the projection
(`projector.blueprint_sync`). Entry values are Helm values and may hold secrets: they are
redacted like override values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import delete, get, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth import Role, requires
from api.context import Hub
from api.errors import NotFound
from api.event_records import redact_values
from api.tenancy import Tenant
from events.catalog import RolloutStrategy
from projector.blueprint_sync import BlueprintVersionRow, ClusterSync, behind, blueprint_status
from projector.blueprint_sync import blueprint_versions as read_versions
from registry.blueprints import (
    EntryChange,
    assign_blueprint,
    diff_blueprints,
    force_sync,
    load_blueprint,
    publish_blueprint,
    unassign_blueprint,
)
from taskset.blueprints import BlueprintEntry, BlueprintSpec, parse_blueprint

NameParam = Annotated[str, PathParameter(max_length=63)]


class PublishBlueprintBody(msgspec.Struct, frozen=True, kw_only=True):
    """The blueprint document (name, entries, base, remove, selector, driftPolicy) and how a
    new version spreads over its clusters."""

    blueprint: dict[str, Any]
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)


class PublishedBlueprint(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    digest: str
    changed: bool


class EntryView(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    """0: follows the latest published version."""
    depends_on: list[str]
    values: dict[str, Any]

    @classmethod
    def of(cls, entry: BlueprintEntry) -> EntryView:
        return cls(
            taskset=entry.taskset,
            version=entry.version,
            depends_on=list(entry.depends_on),
            values=redact_values(entry.values),
        )


class BlueprintView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: int
    latest: int
    entries: list[EntryView]
    selector: str
    drift_policy: str
    base: str
    base_version: int
    published_at: str
    published_by: str


class AssignBody(msgspec.Struct, frozen=True, kw_only=True):
    pinned_version: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    """0 follows the latest version."""


class ChangeView(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    change: str
    fields: list[str]
    before: EntryView | None
    after: EntryView | None

    @classmethod
    def of(cls, change: EntryChange) -> ChangeView:
        return cls(
            taskset=change.taskset,
            change=change.change,
            fields=change.fields,
            before=EntryView.of(change.before) if change.before else None,
            after=EntryView.of(change.after) if change.after else None,
        )


class BlueprintDiff(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    from_version: int
    to_version: int
    changes: list[ChangeView]
    selector: tuple[str, str] | None = None
    drift_policy: tuple[str, str] | None = None


def view_of(row: BlueprintVersionRow, latest: int) -> BlueprintView:
    return BlueprintView(
        name=row.blueprint,
        version=row.version,
        latest=latest,
        entries=[EntryView.of(entry) for entry in row.entries],
        selector=row.selector,
        drift_policy=row.drift_policy,
        base=row.base,
        base_version=row.base_version,
        published_at=row.published_at,
        published_by=row.actor,
    )


def in_project(tenant: Tenant, spec: BlueprintSpec) -> BlueprintSpec:
    """`spec` with every name it holds (its own, its base's, its entries') full in the project."""

    def taskset(name: str) -> str:
        return tenant.readable("taskset", name)

    return msgspec.structs.replace(
        spec,
        name=tenant.full("blueprint", spec.name),
        base=tenant.readable("blueprint", spec.base) if spec.base else "",
        remove=[taskset(name) for name in spec.remove],
        entries=[
            msgspec.structs.replace(
                entry,
                taskset=taskset(entry.taskset),
                depends_on=[taskset(name) for name in entry.depends_on],
            )
            for entry in spec.entries
        ],
    )


@post(
    "/api/v1/blueprints",
    guards=[requires(Role.publisher)],
    tags=["blueprints"],
    summary="Publish the next version of a blueprint (unchanged if it says the same)",
    status_code=200,
)
async def publish(
    hub: Hub, tenant: Tenant, data: JSONBody[PublishBlueprintBody]
) -> PublishedBlueprint:
    spec = in_project(tenant, parse_blueprint(data.blueprint))
    outcome = await publish_blueprint(
        hub.store,
        spec,
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
        rollout=data.rollout,
    )
    return PublishedBlueprint(
        name=outcome.name, version=outcome.version, digest=outcome.digest, changed=outcome.changed
    )


@get(
    "/api/v1/blueprints",
    guards=[requires(Role.viewer)],
    tags=["blueprints"],
    summary="Every blueprint at its latest version",
)
async def list_(hub: Hub, tenant: Tenant) -> list[BlueprintView]:
    async with hub.read_models() as db:
        rows = await read_versions(db)
    latest: dict[str, BlueprintVersionRow] = {}
    for row in rows:
        if tenant.owns_or_shared(row.blueprint):
            latest[row.blueprint] = row
    return [
        view_of(row, row.version) if tenant.owns(name) else shared_view(row)
        for name, row in latest.items()
    ]


def shared_view(row: BlueprintVersionRow) -> BlueprintView:
    """Another project's shared blueprint: what it holds, not who published it."""
    return msgspec.structs.replace(view_of(row, row.version), published_by="")


async def _versions(hub: Hub, name: str) -> dict[int, BlueprintVersionRow]:
    async with hub.read_models() as db:
        versions = {row.version: row for row in await read_versions(db, name)}
    if not versions:
        raise NotFound(f"blueprint {name} has never been published")
    return versions


def _version(versions: dict[int, BlueprintVersionRow], name: str, version: int) -> int:
    chosen = version or max(versions)
    if chosen not in versions:
        raise NotFound(f"blueprint {name} has no version {version} (latest is {max(versions)})")
    return chosen


@get(
    "/api/v1/blueprints/{name:str}",
    guards=[requires(Role.viewer)],
    tags=["blueprints"],
    summary="One version of a blueprint (the latest unless `version` is given)",
)
async def show(
    hub: Hub, tenant: Tenant, name: NameParam, version: Annotated[int, QueryParameter(ge=0)] = 0
) -> BlueprintView:
    name = tenant.readable("blueprint", name)
    versions = await _versions(hub, name)
    view = view_of(versions[_version(versions, name, version)], max(versions))
    return view if tenant.owns(name) else msgspec.structs.replace(view, published_by="")


@get(
    "/api/v1/blueprints/{name:str}/diff",
    guards=[requires(Role.viewer)],
    tags=["blueprints"],
    summary="What changes between two versions of a blueprint, entry by entry",
)
async def diff(
    hub: Hub,
    tenant: Tenant,
    name: NameParam,
    from_version: Annotated[int, QueryParameter(name="from", ge=0)] = 0,
    to_version: Annotated[int, QueryParameter(name="to", ge=0)] = 0,
) -> BlueprintDiff:
    name = tenant.readable("blueprint", name)
    history, _ = await load_blueprint(hub.store, name)
    if not history.versions:
        raise NotFound(f"blueprint {name} has never been published")
    latest = max(history.versions)
    to_ = to_version or latest
    from_ = from_version or max(1, to_ - 1)
    for wanted in (from_, to_):
        if wanted not in history.versions:
            raise NotFound(f"blueprint {name} has no version {wanted} (latest is {latest})")
    before, after = history.versions[from_].resolved, history.versions[to_].resolved
    return BlueprintDiff(
        name=name,
        from_version=from_,
        to_version=to_,
        changes=[ChangeView.of(change) for change in diff_blueprints(before, after)],
        selector=(before.selector, after.selector) if before.selector != after.selector else None,
        drift_policy=(before.drift_policy, after.drift_policy)
        if before.drift_policy != after.drift_policy
        else None,
    )


@put(
    "/api/v1/blueprints/{name:str}/clusters/{cluster:str}",
    guards=[requires(Role.publisher)],
    tags=["blueprints"],
    summary="Assign a cluster to the blueprint, optionally pinned to a version",
)
async def assign(
    hub: Hub,
    tenant: Tenant,
    name: NameParam,
    cluster: NameParam,
    data: JSONBody[AssignBody],
) -> AssignBody:
    await assign_blueprint(
        hub.store,
        tenant.own("blueprint", name),
        tenant.own("cluster", cluster),
        pinned_version=data.pinned_version,
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )
    return data


@delete(
    "/api/v1/blueprints/{name:str}/clusters/{cluster:str}",
    guards=[requires(Role.publisher)],
    tags=["blueprints"],
    summary="End a cluster's assignment (and pin); its labels alone decide again",
    status_code=204,
)
async def unassign(hub: Hub, tenant: Tenant, name: NameParam, cluster: NameParam) -> None:
    await unassign_blueprint(
        hub.store,
        tenant.own("blueprint", name),
        tenant.own("cluster", cluster),
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )


@post(
    "/api/v1/blueprints/{name:str}/clusters/{cluster:str}/sync",
    guards=[requires(Role.publisher)],
    tags=["blueprints"],
    summary="Force-sync: send every entry to the cluster again, in dependency order",
    status_code=202,
)
async def sync(hub: Hub, tenant: Tenant, name: NameParam, cluster: NameParam) -> None:
    await force_sync(
        hub.store,
        tenant.own("blueprint", name),
        tenant.own("cluster", cluster),
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )


@get(
    "/api/v1/blueprints/{name:str}/status",
    guards=[requires(Role.viewer)],
    tags=["blueprints"],
    summary="Each cluster's sync status; with `behind`, only clusters not in sync on that version",
)
async def status(
    hub: Hub,
    tenant: Tenant,
    name: NameParam,
    behind_version: Annotated[int | None, QueryParameter(name="behind", ge=0)] = None,
) -> list[ClusterSync]:
    name = tenant.own("blueprint", name)
    versions = await _versions(hub, name)
    async with hub.read_models() as db:
        rows = await blueprint_status(db, name)
    if behind_version is None:
        return rows
    return behind(rows, _version(versions, name, behind_version))


ROUTES = [publish, list_, show, diff, assign, unassign, sync, status]
