"""Kubernetes Events for what the controller did: drift detected, drift corrected, failures.

Events are how `kubectl describe` and cluster tooling learn what happened to an object; they
complement, never replace, the counters and fields in status (Events expire after an hour).
Recording is best effort: a lost Event is logged, it never fails a reconcile.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from typing import Any, Literal

from cluster_controller.errors import ControllerError
from cluster_controller.kube import Kube
from kube_contract.resources import EVENT

log = logging.getLogger(__name__)

COMPONENT = "fleetbus-controller"


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(
    involved: dict[str, Any],
    *,
    event_type: Literal["Normal", "Warning"],
    reason: str,
    message: str,
    now: datetime,
    instance: str,
) -> dict[str, Any]:
    metadata = involved.get("metadata") or {}
    name = str(metadata.get("name", "object"))
    namespace = str(metadata.get("namespace") or "default")
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", ""),
            "kind": involved.get("kind", ""),
            "name": name,
            "namespace": str(metadata.get("namespace") or ""),
            "uid": str(metadata.get("uid") or ""),
        },
        "reason": reason,
        "message": message[:1024],
        "type": event_type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, kube: Kube, *, instance: str = "") -> None:
        self.kube = kube
        self.instance = instance or socket.gethostname()

    async def record(
        self,
        involved: dict[str, Any],
        *,
        event_type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        now: datetime,
    ) -> None:
        body = event_body(
            involved,
            event_type=event_type,
            reason=reason,
            message=message,
            now=now,
            instance=self.instance,
        )
        try:
            await self.kube.create(EVENT, body, namespace=body["metadata"]["namespace"])
        except ControllerError as e:
            log.warning("could not record event %s on %s: %s", reason, body["involvedObject"], e)
