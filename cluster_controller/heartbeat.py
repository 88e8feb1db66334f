"""The controller's heartbeat Lease: its health where the connector (and so the hub) can see it.

Every `interval` the replica server-side applies its own Lease (`kube_contract.controller_status`)
with what its probes would answer: version, role (leader, standby, or single when no election
is held), live, ready and why, each watch's sync state, and its last error. The Lease lasts
three intervals, so a replica that stops renewing (killed, hung, cut from the apiserver) shows
as stale to the connector within that time. A replica that stops cleanly writes one last
heartbeat saying so, so the hub hears "stopped" at once rather than after the Lease runs out.
A change of what it says of its state (live, ready, role; its watches synced at start) is
written at once too, checked every `change_check_s`, rather than at the next renewal: the
connector watches for it and tells the hub.

A running replica also removes the heartbeat Leases of replicas gone for `PRUNE_AFTER` (the
pods a rolling update replaced), so they do not pile up; while none runs, the stale Leases stay
and say when the controller was last heard from.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta

from cluster_controller.errors import ControllerError
from cluster_controller.health import ControllerHealth
from cluster_controller.kube import Kube
from kube_contract.controller_status import (
    LABEL_CONTROLLER_STATUS,
    ControllerHeartbeat,
    ControllerRole,
    heartbeat_lease,
    lease_name,
    read_heartbeat,
)
from kube_contract.resources import LEASE

log = logging.getLogger(__name__)

FIELD_MANAGER = "fleetbus-controller-heartbeat"
PRUNE_AFTER = timedelta(minutes=15)
FINAL_WRITE_TIMEOUT_S = 5.0


def heartbeat_of(health: ControllerHealth, *, elected: bool) -> ControllerHeartbeat:
    """What the replica says of itself now (pure over the health it reads)."""
    live, live_reason = health.live()
    ready, reason = health.readiness()
    role: ControllerRole = "single"
    if elected:
        role = "standby" if health.standby or not health.started.is_set() else "leader"
    controller = health.controller
    return ControllerHeartbeat(
        version=health.version,
        role=role,
        live=live,
        ready=ready,
        reason=reason if live else live_reason,
        watches=health.informers_synced(),
        last_error=controller.last_error,
        last_error_at=controller.last_error_at,
        reconciles=controller.reconciles,
        queue_depth=controller.queue.pending(),
    )


class Heartbeat:
    def __init__(
        self,
        kube: Kube,
        health: ControllerHealth,
        *,
        namespace: str,
        instance: str,
        elected: bool,
        clock: Callable[[], datetime],
        interval_s: float = 10.0,
        change_check_s: float = 1.0,
    ) -> None:
        self.kube = kube
        self.health = health
        self.namespace = namespace
        self.instance = instance
        self.elected = elected
        self.clock = clock
        self.interval_s = interval_s
        self.change_check_s = change_check_s
        self.duration_s = max(1, math.ceil(3 * interval_s))
        self._last_problem = ""

    @property
    def lease(self) -> str:
        return lease_name(self.instance)

    async def write(self, heartbeat: ControllerHeartbeat | None = None) -> None:
        manifest = heartbeat_lease(
            instance=self.instance,
            namespace=self.namespace,
            heartbeat=heartbeat or heartbeat_of(self.health, elected=self.elected),
            now=self.clock(),
            duration_s=self.duration_s,
        )
        await self.kube.apply(manifest, field_manager=FIELD_MANAGER, info=LEASE)

    async def prune(self) -> None:
        """Delete the heartbeat Leases of other replicas not renewed for `PRUNE_AFTER`."""
        now = self.clock()
        listing = await self.kube.list(
            LEASE, namespace=self.namespace, label_selector=f"{LABEL_CONTROLLER_STATUS}=true"
        )
        for lease in listing.items:
            name = str((lease.get("metadata") or {}).get("name") or "")
            beat = read_heartbeat(lease)
            if name == self.lease or beat.renewed_at is None:
                continue
            if now - beat.renewed_at > PRUNE_AFTER:
                await self.kube.delete(LEASE, name, namespace=self.namespace)
                log.info("removed the heartbeat of controller replica %s (gone)", beat.name)

    async def run(self) -> None:
        """Renew until cancelled; a failed renewal is logged once per distinct reason."""
        pruned_at: datetime | None = None
        while True:
            written = self._state()
            try:
                await self.write()
                now = self.clock()
                if pruned_at is None or now - pruned_at > PRUNE_AFTER / 3:
                    await self.prune()
                    pruned_at = now
                if self._last_problem:
                    log.info("controller heartbeat renewed again")
                self._last_problem = ""
            except ControllerError as e:
                if str(e) != self._last_problem:
                    log.warning(
                        "cannot renew the controller heartbeat Lease %s/%s: %s",
                        self.namespace,
                        self.lease,
                        e,
                    )
                self._last_problem = str(e)
            await self._until_due_or_changed(written)

    def _state(self) -> tuple[bool, bool, str]:
        said = heartbeat_of(self.health, elected=self.elected)
        return said.live, said.ready, said.role

    async def _until_due_or_changed(self, written: tuple[bool, bool, str]) -> None:
        """Wait for the next renewal, or less when the replica's state differs from `written`."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.interval_s
        while (left := due - loop.time()) > 0:
            await asyncio.sleep(min(left, self.change_check_s))
            if self._state() != written:
                return

    async def stopped(self, reason: str) -> None:
        """One last heartbeat: this replica is stopping (best effort, bounded)."""
        said = heartbeat_of(self.health, elected=self.elected)
        final = ControllerHeartbeat(
            version=said.version,
            role=said.role,
            live=False,
            ready=False,
            reason=f"stopped: {reason}",
            watches=said.watches,
            last_error=said.last_error,
            last_error_at=said.last_error_at,
            reconciles=said.reconciles,
        )
        try:
            async with asyncio.timeout(FINAL_WRITE_TIMEOUT_S):
                await self.write(final)
        except (ControllerError, TimeoutError) as e:
            log.warning("could not write the controller's last heartbeat: %s", e)
