"""`/api/v1/tasksets/{taskset}/overrides`: list, set, remove and preview per-cluster overrides.

An override is checked against the taskset's latest snapshot before it is written (see
`registry.overrides`); the preview is a unified diff with Secret values masked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import delete, get, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth import Role, requires
from api.context import Hub
from api.event_records import redact_patches, redact_values
from api.tenancy import Tenant
from events.catalog import OverrideSet
from registry.overrides import (
    SetOverride,
    list_overrides,
    preview_overrides,
    remove_override,
    set_override,
)

NameParam = Annotated[str, PathParameter(max_length=63)]


class OverrideSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Exactly one of `cluster` or `selector`, and exactly one of `values` or `patches`."""

    cluster: Annotated[str, msgspec.Meta(max_length=63)] = ""
    selector: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    patches: list[dict[str, Any]] = msgspec.field(default_factory=list)
    sensitive: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=512)]],
        msgspec.Meta(max_length=256),
    ] = msgspec.field(default_factory=list)
    """Dotted paths of `values` sealed and masked whatever their key (`db.password`)."""


class OverrideView(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    name: str
    cluster: str
    selector: str
    values: dict[str, Any]
    patches: list[dict[str, Any]]
    sensitive: list[str]
    set_at: datetime
    set_by: str
    revision: str

    @classmethod
    def of(cls, event: OverrideSet) -> OverrideView:
        return cls(
            taskset=event.taskset,
            name=event.name,
            cluster=event.cluster,
            selector=event.selector,
            values=redact_values(event.values),
            patches=redact_patches(event.patches),
            sensitive=event.sensitive,
            set_at=event.occurred_at,
            set_by=event.actor,
            revision=event.id,
        )


class RemovedOverride(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    name: str


class Preview(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    cluster: str
    overrides: list[str]
    """The overrides that apply on this cluster, in the order they apply."""
    diff: str
    """Unified diff of the objects' YAML: published snapshot -> what this cluster gets."""


@get(
    "/api/v1/tasksets/{taskset:str}/overrides",
    guards=[requires(Role.viewer)],
    tags=["overrides"],
    summary="A taskset's overrides in force, in the order they apply",
)
async def list_(hub: Hub, tenant: Tenant, taskset: NameParam) -> list[OverrideView]:
    full = tenant.own("taskset", taskset)
    return [OverrideView.of(event) for event in await list_overrides(hub.store, full)]


@put(
    "/api/v1/tasksets/{taskset:str}/overrides/{name:str}",
    guards=[requires(Role.publisher)],
    tags=["overrides"],
    summary="Set (or replace) an override",
)
async def set_(
    hub: Hub,
    tenant: Tenant,
    taskset: NameParam,
    name: NameParam,
    data: JSONBody[OverrideSpec],
) -> OverrideView:
    event = await set_override(
        hub.store,
        SetOverride(
            taskset=tenant.own("taskset", taskset),
            name=name,
            cluster=tenant.own("cluster", data.cluster) if data.cluster else "",
            selector=data.selector,
            values=data.values,
            patches=data.patches,
            sensitive=data.sensitive,
            actor=tenant.principal.actor,
        ),
        datetime.now(UTC),
    )
    # Shown as stored: values marked sensitive are envelopes there, masked like any secret.
    shown = hub.store.sealer.seal(event) if hub.store.sealer is not None else event
    assert isinstance(shown, OverrideSet)
    return OverrideView.of(shown)


@delete(
    "/api/v1/tasksets/{taskset:str}/overrides/{name:str}",
    guards=[requires(Role.publisher)],
    tags=["overrides"],
    summary="Remove an override",
    status_code=200,
)
async def remove(hub: Hub, tenant: Tenant, taskset: NameParam, name: NameParam) -> RemovedOverride:
    event = await remove_override(
        hub.store,
        tenant.own("taskset", taskset),
        name,
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )
    return RemovedOverride(taskset=event.taskset, name=event.name)


@get(
    "/api/v1/tasksets/{taskset:str}/overrides-preview",
    guards=[requires(Role.viewer)],
    tags=["overrides"],
    summary="What the overrides make of the latest version on one cluster (a diff)",
)
async def preview(
    hub: Hub,
    tenant: Tenant,
    taskset: NameParam,
    cluster: Annotated[str, QueryParameter(max_length=63)],
) -> Preview:
    result = await preview_overrides(
        hub.store, tenant.own("taskset", taskset), tenant.own("cluster", cluster), hub.renderer
    )
    return Preview(
        taskset=result.taskset,
        version=result.version,
        cluster=result.cluster,
        overrides=result.overrides,
        diff=result.diff,
    )


ROUTES = [list_, set_, remove, preview]
