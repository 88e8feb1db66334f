"""`/api/v1/clusters` (writes): register a cluster and get its bundle, relabel, deregister.

Registration answers with the cluster's edge bundle as a .tar.gz: its certificate and key are
issued for this answer and kept nowhere else, so the request is admin-only and the answer is
the only copy (register again after deregistering to get a new one).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Response, delete, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter

from api.auth import Role, requires
from api.context import Hub
from api.errors import ServiceUnavailable
from api.tenancy import Tenant, admit_cluster
from registry.clusters import (
    change_cluster_labels,
    cluster_subject,
    deregister_cluster,
    drain_cluster,
    register_cluster,
)
from registry.keys import shred_cluster_keys

NameParam = Annotated[str, PathParameter(max_length=63)]
BUNDLE_MEDIA_TYPE = "application/gzip"


class NewCluster(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=63)]
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class LabelChange(msgspec.Struct, frozen=True, kw_only=True):
    set: dict[str, str] = msgspec.field(default_factory=dict)
    remove: list[str] = msgspec.field(default_factory=list)


class ClusterRecordView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    labels: dict[str, str]
    registered: bool


@post(
    "/api/v1/clusters",
    guards=[requires(Role.admin)],
    tags=["clusters"],
    summary="Register a cluster; the answer is its edge bundle (.tar.gz)",
    status_code=201,
    media_type=BUNDLE_MEDIA_TYPE,
    responses={
        201: ResponseSpec(
            data_container=bytes,
            media_type=BUNDLE_MEDIA_TYPE,
            description="The edge bundle: CA, cluster certificate and key, leaf config, values",
        )
    },
)
async def register(hub: Hub, tenant: Tenant, data: JSONBody[NewCluster]) -> Response[bytes]:
    if hub.enrollment is None:
        raise ServiceUnavailable(
            "this hub has no leafnode listener, so it cannot issue cluster certificates"
        )
    name = tenant.full("cluster", data.name)
    await admit_cluster(hub, name)
    now = datetime.now(UTC)
    issued = hub.enrollment.issue(name, data.labels, now)
    record = await register_cluster(
        hub.store,
        name,
        data.labels,
        actor=tenant.principal.actor,
        now=now,
        certificate_fingerprint=issued.fingerprint,
    )
    await hub.enrollment.wait_applied(await hub.store.subject_version(cluster_subject(record.name)))
    return Response(
        issued.archive,
        status_code=201,
        media_type=BUNDLE_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{record.name}-bundle.tar.gz"',
            "X-Fleetbus-Cluster": record.name,
        },
    )


@patch(
    "/api/v1/clusters/{name:str}/labels",
    guards=[requires(Role.admin)],
    tags=["clusters"],
    summary="Set and remove labels of a cluster",
)
async def relabel(
    hub: Hub, tenant: Tenant, name: NameParam, data: JSONBody[LabelChange]
) -> ClusterRecordView:
    record = await change_cluster_labels(
        hub.store,
        tenant.own("cluster", name),
        data.set,
        data.remove,
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )
    return ClusterRecordView(name=record.name, labels=record.labels, registered=record.registered)


@delete(
    "/api/v1/clusters/{name:str}",
    guards=[requires(Role.admin)],
    tags=["clusters"],
    summary=(
        "Deregister a cluster: its tasksets are no longer placed, its access is revoked, "
        "its data keys are shredded"
    ),
    status_code=200,
)
async def remove(hub: Hub, tenant: Tenant, name: NameParam) -> ClusterRecordView:
    actor = tenant.principal.actor
    name = tenant.own("cluster", name)
    record = await deregister_cluster(hub.store, name, actor=actor, now=datetime.now(UTC))
    if hub.keyring is not None:
        # Crypto-shredding: what was sealed for this cluster alone can never be read again.
        await shred_cluster_keys(
            hub.store,
            hub.keyring,
            name,
            reason="cluster removed",
            actor=actor,
            now=datetime.now(UTC),
        )
    if hub.enrollment is not None:
        # Answer once the cluster's connection is really refused.
        await hub.enrollment.wait_applied(await hub.store.subject_version(cluster_subject(name)))
    return ClusterRecordView(name=record.name, labels=record.labels, registered=record.registered)


@post(
    "/api/v1/clusters/{name:str}/drain",
    guards=[requires(Role.admin)],
    tags=["clusters"],
    summary="Start removing every taskset from a cluster (preDelete first), before removing it",
    status_code=200,
)
async def drain(hub: Hub, tenant: Tenant, name: NameParam) -> ClusterRecordView:
    record = await drain_cluster(
        hub.store, tenant.own("cluster", name), actor=tenant.principal.actor, now=datetime.now(UTC)
    )
    return ClusterRecordView(name=record.name, labels=record.labels, registered=record.registered)


ROUTES = [register, relabel, remove, drain]
