"""`/api/v1/keys`: the hub's keyring (ids and scopes only), rotation and crypto-shredding.

Admin only. Nothing here ever answers with key material: the keyring's wrapped keys are
blanked, and the events recorded carry ids.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.params import JSONBody

from api.auth import Role, principal_of, requires
from api.context import Hub
from api.errors import ServiceUnavailable
from registry.keys import rotate_keys, shred_cluster_keys
from sealing.keyring import Keyring

ClusterName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


class DataKeyView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    scope: str
    created: str
    active: bool


class ShreddedView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    scope: str
    at: str


class KeyringView(msgspec.Struct, frozen=True, kw_only=True):
    kek: str
    """The id of the key-encryption key in use."""
    data_keys: list[DataKeyView]
    shredded: list[ShreddedView]


class RotateRequest(msgspec.Struct, frozen=True, kw_only=True):
    kek: bool = True
    data_keys: bool = True
    clusters: Annotated[list[ClusterName], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )
    """Renew only these clusters' data keys (with `data_keys`); empty renews every scope."""


class RotationView(msgspec.Struct, frozen=True, kw_only=True):
    kek: str
    previous_kek: str
    data_keys: list[str]
    rewrapped: int
    event: str


class ShredRequest(msgspec.Struct, frozen=True, kw_only=True):
    cluster: ClusterName


class ShredView(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    key_ids: list[str]
    event: str


def _keyring(hub: Hub) -> Keyring:
    if hub.keyring is None:
        raise ServiceUnavailable("this hub has no keyring: secrets are not sealed at rest")
    return hub.keyring


@get(
    "/api/v1/keys",
    guards=[requires(Role.admin, org=True)],
    tags=["keys"],
    summary="The hub's keyring: key ids, scopes, which seal new secrets, which were shredded",
)
async def list_(hub: Hub) -> KeyringView:
    state = _keyring(hub).describe()
    return KeyringView(
        kek=state.kek,
        data_keys=[
            DataKeyView(id=r.id, scope=r.scope, created=r.created, active=r.active)
            for r in state.keys
        ],
        shredded=[ShreddedView(id=s.id, scope=s.scope, at=s.at) for s in state.shredded],
    )


@post(
    "/api/v1/keys/rotate",
    guards=[requires(Role.admin, org=True)],
    tags=["keys"],
    summary="Rotate the key-encryption key and/or data keys; old secrets stay readable",
    status_code=200,
)
async def rotate(
    request: Request[Any, Any, Any], hub: Hub, data: JSONBody[RotateRequest]
) -> RotationView:
    event = await rotate_keys(
        hub.store,
        _keyring(hub),
        kek=data.kek,
        data_keys=data.data_keys,
        clusters=data.clusters,
        actor=principal_of(request).actor,
        now=datetime.now(UTC),
    )
    return RotationView(
        kek=event.kek,
        previous_kek=event.previous_kek,
        data_keys=event.data_keys,
        rewrapped=event.rewrapped,
        event=event.id,
    )


@post(
    "/api/v1/keys/shred",
    guards=[requires(Role.admin, org=True)],
    tags=["keys"],
    summary="Destroy a cluster's data keys: the secrets sealed for it become unreadable",
    status_code=200,
)
async def shred(
    request: Request[Any, Any, Any], hub: Hub, data: JSONBody[ShredRequest]
) -> ShredView:
    event = await shred_cluster_keys(
        hub.store,
        _keyring(hub),
        data.cluster,
        reason="shredded on request",
        actor=principal_of(request).actor,
        now=datetime.now(UTC),
    )
    if event is None:
        return ShredView(cluster=data.cluster, key_ids=[], event="")
    return ShredView(cluster=data.cluster, key_ids=event.key_ids, event=event.id)


ROUTES = [list_, rotate, shred]
