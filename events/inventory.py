"""Inventory digests: what an edge holds and runs, sent on `fleet.inventory.<cluster>`.

They travel by core NATS (frequent, only the latest matters, never logged) and serve two ends:
liveness, and anti-entropy. The hub compares `desired` with its own DESIRED stream and
re-delivers whatever the edge lacks or holds stale; `applied` and `live_digest` say what the
cluster actually runs, for status and for spotting an executor that lost its state.

Both sides compute `desired_digest` with `desired_state_digest`, so a cluster in sync costs the
hub one digest comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from taskset.capabilities import ClusterCapabilities
from taskset.digest import digest_of


class TasksetState(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One taskset's ClusterTask as a generation and a content digest (tombstone: removed)."""

    generation: int
    digest: str
    removed: bool = False


class ControllerReplica(msgspec.Struct, frozen=True, kw_only=True):
    """One cluster controller replica, as the connector last read its heartbeat."""

    name: str
    role: str = ""
    """`leader`, `standby` or `single` (no leader election)."""
    ready: bool = False
    reason: str = ""
    version: str = ""
    watches: dict[str, bool] = msgspec.field(default_factory=dict)
    """Per followed resource (tasks, tasklets, steps, fleetnamespaces): synced."""
    last_error: str = ""
    last_error_at: datetime | None = None
    heard_at: datetime | None = None
    """When the replica last renewed its heartbeat."""
    stale: bool = False
    """Not renewed within its lease duration: the replica stopped or cannot reach the API."""
    stopped: bool = False
    """Its last heartbeat said it was stopping (its `reason` says why)."""


class ControllerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster controller's health as the connector judged it from the heartbeats."""

    ready: bool = False
    reason: str = ""
    """Why (not) ready: e.g. "watches synced", or "has not reported for 95s"."""
    version: str = ""
    """The version of the replica that reconciles (or of the freshest one)."""
    leader: str = ""
    """The replica that reconciles ("" when none does)."""
    watches_synced: bool | None = None
    """Whether that replica's watches are all synced (None: not known)."""
    last_error: str = ""
    """The newest reconcile or watch failure any replica reported."""
    last_error_at: datetime | None = None
    replicas: list[ControllerReplica] = msgspec.field(default_factory=list)


class EdgeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The connector's own word on itself: its version and readiness when it sent the digest."""

    version: str = ""
    ready: bool = False
    reason: str = ""
    """What readiness waits for (or "connected to the hub and caught up")."""
    controller: ControllerStatus | None = None
    """The cluster controller's health (None: a simulated cluster, or an older connector)."""


class InventoryDigest(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    sent_at: datetime
    desired: dict[str, TasksetState] = msgspec.field(default_factory=dict)
    """The desired state the edge holds, per taskset (tombstones included)."""
    desired_digest: str = ""
    applied: dict[str, TasksetState] = msgspec.field(default_factory=dict)
    """What the executor reports as applied, per taskset."""
    live_digest: str = ""
    """Digest of the live objects the executor manages."""
    objects: int = 0
    edge: EdgeStatus | None = None
    """None from edges that predate it."""
    capabilities_digest: str = ""
    """Digest of the cluster's capabilities (`taskset.capabilities.ClusterCapabilities`)."""
    capabilities: ClusterCapabilities | None = None
    """The capabilities themselves, sent when they changed and now and then (the hub records
    them as `ClusterCapabilitiesReported` when they differ from what it knows)."""


def desired_state_digest(desired: Mapping[str, TasksetState]) -> str:
    return digest_of(
        {name: [s.generation, s.digest, s.removed] for name, s in sorted(desired.items())}
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(InventoryDigest)


def encode_inventory(inventory: InventoryDigest) -> bytes:
    return _encoder.encode(inventory)


def decode_inventory(data: bytes) -> InventoryDigest:
    """Raises `msgspec.DecodeError` / `msgspec.ValidationError` on a malformed digest."""
    try:
        return _decoder.decode(data)
    except (UnicodeDecodeError, RecursionError) as e:
        # msgspec's own errors for bad UTF-8 in a string and for nesting too deep: an edge
        # controls these bytes, so they must fail like any other malformed digest.
        raise msgspec.DecodeError(f"malformed inventory digest: {e}") from e
