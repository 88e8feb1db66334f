"""The controller's heartbeat: how the cluster controller tells the connector how it is.

The controller's probes listen inside its own pod, and the hub hears only from the connector,
so the controller writes its health where the connector can read it: one coordination.k8s.io
Lease per controller replica in the connector's namespace (the controller's
`--lease-namespace`). A Lease is what Kubernetes itself uses for heartbeats (node leases): the
holder renews `renewTime` well within `leaseDurationSeconds`, and a Lease not renewed for a
whole duration means its writer is gone. What the replica says of itself travels in one
annotation as JSON (`ControllerHeartbeat`).

The connector lists these Leases by label, judges them (`edge_connector.health`) and sends the
verdict to the hub in its inventory digest. This module is the format both sides share: names,
label, annotation, the manifest the controller applies and the reading the connector takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

LABEL_CONTROLLER_STATUS = "fleetbus.io/controller-status"
"""On every heartbeat Lease (value "true"): what the connector lists."""
ANNOTATION_CONTROLLER_STATUS = "fleetbus.io/controller-status"
"""The heartbeat itself, as JSON."""
LEASE_PREFIX = "fleetbus-controller-status-"
MAX_LEASE_NAME = 253

ControllerRole = Literal["leader", "standby", "single"]
"""`leader`: holds the leader-election Lease; `standby`: waits for it; `single`: no election."""


class ControllerHeartbeat(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one controller replica says of itself at each renewal."""

    version: str = ""
    role: ControllerRole = "single"
    live: bool = True
    ready: bool = False
    reason: str = ""
    """Why (not) ready, as its `/readyz` says it."""
    watches: dict[str, bool] = msgspec.field(default_factory=dict)
    """Per resource the controller follows (tasks, tasklets, steps, fleetnamespaces): synced."""
    last_error: str = ""
    """The last reconcile or watch failure ("" when none since start)."""
    last_error_at: datetime | None = None
    reconciles: int = 0
    queue_depth: int = 0


class ReplicaHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """A heartbeat Lease as the connector reads it."""

    name: str
    """The replica (the Lease's holder)."""
    renewed_at: datetime | None
    duration_s: int
    heartbeat: ControllerHeartbeat | None
    """None when the annotation is missing or does not decode (`problem` says why)."""
    problem: str = ""


def lease_name(instance: str) -> str:
    """The heartbeat Lease of one replica: a DNS subdomain derived from its instance name."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", instance.lower()).strip(".-") or "controller"
    return (LEASE_PREFIX + cleaned)[:MAX_LEASE_NAME].rstrip(".-")


def micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ControllerHeartbeat)


def heartbeat_lease(
    *,
    instance: str,
    namespace: str,
    heartbeat: ControllerHeartbeat,
    now: datetime,
    duration_s: int,
) -> dict[str, Any]:
    """The Lease manifest a replica server-side applies at every renewal."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(instance),
            "namespace": namespace,
            "labels": {LABEL_CONTROLLER_STATUS: "true"},
            "annotations": {ANNOTATION_CONTROLLER_STATUS: _encoder.encode(heartbeat).decode()},
        },
        "spec": {
            "holderIdentity": instance,
            "leaseDurationSeconds": duration_s,
            "renewTime": micro_time(now),
        },
    }


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def read_heartbeat(lease: Mapping[str, Any]) -> ReplicaHeartbeat:
    """A heartbeat Lease as the connector judges it; never raises on a malformed one."""
    metadata = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    name = str(spec.get("holderIdentity") or metadata.get("name") or "?")
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    try:
        duration = int(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        duration = 0
    raw = (metadata.get("annotations") or {}).get(ANNOTATION_CONTROLLER_STATUS)
    if not isinstance(raw, str):
        return ReplicaHeartbeat(
            name=name,
            renewed_at=renewed,
            duration_s=duration,
            heartbeat=None,
            problem=f"Lease {metadata.get('name')} has no "
            f"{ANNOTATION_CONTROLLER_STATUS} annotation",
        )
    try:
        heartbeat = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as e:
        return ReplicaHeartbeat(
            name=name,
            renewed_at=renewed,
            duration_s=duration,
            heartbeat=None,
            problem=f"Lease {metadata.get('name')}: unreadable heartbeat: {e}",
        )
    return ReplicaHeartbeat(name=name, renewed_at=renewed, duration_s=duration, heartbeat=heartbeat)
