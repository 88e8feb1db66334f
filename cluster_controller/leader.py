"""Leader election on a coordination.k8s.io Lease, so only one controller replica reconciles.

Two controllers working the same Tasks would both apply (harmless: same field manager) but would
also both count drift and write status, so a rolling upgrade or a second replica must wait. The
protocol is client-go's: a Lease names its holder and when it last renewed; a holder renews well
within the lease duration; anyone may take a lease whose holder has not renewed for a whole
duration. Every write carries the resourceVersion it read, so two candidates never both win.

`decide_lease` is the pure rule; `LeaderElection` does the I/O around it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from cluster_controller.errors import Conflict, ControllerError
from cluster_controller.kube import Kube
from kube_contract.resources import LEASE

log = logging.getLogger(__name__)


LeaseMove = Literal["take", "renew", "wait"]


def micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def decide_lease(spec: dict[str, Any] | None, identity: str, now: datetime) -> LeaseMove:
    """Take a free or expired lease, renew our own, wait for someone else's."""
    if spec is None:
        return "take"
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        return "renew"
    if not holder:
        return "take"
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 0)
    if renewed is None or now > renewed + timedelta(seconds=duration):
        return "take"
    return "wait"


class LeadershipLost(ControllerError):
    """The Lease could not be renewed in time, or someone else holds it now."""


class LeaderElection:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        identity: str,
        clock: Callable[[], datetime],
        name: str = "fleetbus-controller",
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.identity = identity
        self.clock = clock
        self.name = name
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds

    def _body(self, current: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
        spec = dict((current or {}).get("spec") or {})
        taking = spec.get("holderIdentity") != self.identity
        spec.update(
            {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "renewTime": micro_time(now),
            }
        )
        if taking:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if current is not None else 0
            )
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    async def try_lead(self) -> bool:
        """One attempt: True if we hold the lease now."""
        current = await self.kube.get(LEASE, self.name, self.namespace)
        now = self.clock()
        move = decide_lease((current or {}).get("spec"), self.identity, now)
        if move == "wait":
            return False
        body = self._body(current, now)
        try:
            if current is None:
                await self.kube.create(LEASE, body, namespace=self.namespace)
            else:
                await self.kube.request(
                    "PUT",
                    LEASE.path(self.namespace, self.name),
                    body=body,
                    what=f"renew Lease {self.namespace}/{self.name}",
                )
        except Conflict:
            return False
        return True

    async def acquire(self) -> None:
        """Wait until this process leads."""
        while not await self.try_lead():
            log.info(
                "Lease %s/%s is held by another controller; waiting", self.namespace, self.name
            )
            await asyncio.sleep(self.renew_seconds)
        log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)

    async def keep(self) -> None:
        """Renew for ever; raise `LeadershipLost` once the lease could not be kept."""
        last_renewal = self.clock()
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                renewed = await self.try_lead()
            except ControllerError as e:
                log.warning("could not renew the Lease: %s", e)
                renewed = False
            now = self.clock()
            if renewed:
                last_renewal = now
            elif now - last_renewal > timedelta(seconds=self.lease_seconds):
                raise LeadershipLost(
                    f"the Lease {self.namespace}/{self.name} was not renewed for "
                    f"{self.lease_seconds}s; another controller may lead now"
                )
