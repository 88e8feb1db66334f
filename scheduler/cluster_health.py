"""Cluster health changes as events: a cluster that goes silent, or whose connector or cluster
controller turns not ready, is recorded as `ClusterHealthChanged` (and again when it is well).

Inventory digests are not logged (they are frequent and only the latest matters), so nothing in
the log would otherwise say that a cluster went offline; notifications follow the log, so they
could not tell anyone. This service looks at what the anti-entropy service heard last from each
registered cluster (when, and the connector's word on itself and on the controller), judges it
(`observe_health`, pure) and records a change once it has lasted `settle` (`decide_health`,
pure), so a connector catching up for a few seconds is no news. What was recorded last per
cluster is read back from the log at start, so a hub restart neither repeats nor loses a change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from events.catalog import ClusterDeregistered, ClusterHealthChanged
from events.errors import EventLogError
from events.ids import new_event_id
from events.inventory import EdgeStatus
from events.store import EventStore
from events.subjects import EVENTS_PREFIX

log = logging.getLogger(__name__)

OFFLINE_AFTER = timedelta(seconds=90)
"""No inventory digest for this long: the cluster is offline (as the API's `connected`)."""
SETTLE = timedelta(seconds=30)


class Health(msgspec.Struct, frozen=True, kw_only=True):
    healthy: bool
    connected: bool
    edge_ready: bool | None = None
    controller_ready: bool | None = None
    reason: str = ""

    @property
    def key(self) -> tuple[bool, bool, bool, bool]:
        """What a change is made of (the wording of a reason is not)."""
        return (
            self.healthy,
            self.connected,
            self.edge_ready is False,
            self.controller_ready is False,
        )


WELL = Health(healthy=True, connected=True)
"""What a cluster is taken to be before anything was recorded for it."""


def observe_health(
    last_seen: datetime | None,
    edge: EdgeStatus | None,
    now: datetime,
    *,
    offline_after: timedelta = OFFLINE_AFTER,
) -> Health | None:
    """A cluster's health from what the hub heard last (None: never heard from, no verdict)."""
    if last_seen is None:
        return None
    silent = now - last_seen
    if silent > offline_after:
        return Health(
            healthy=False,
            connected=False,
            reason=f"no inventory digest for {int(silent.total_seconds())}s: its edge is down "
            "or cut from the hub",
        )
    edge_ready = edge.ready if edge is not None else None
    controller = edge.controller if edge is not None else None
    controller_ready = controller.ready if controller is not None else None
    problems = []
    if edge is not None and not edge.ready:
        problems.append(f"connector: {edge.reason}")
    if controller is not None and not controller.ready:
        problems.append(f"cluster controller: {controller.reason}")
    well = ["connected", *(["connector ready"] if edge_ready else [])]
    if controller_ready:
        well.append("cluster controller ready")
    return Health(
        healthy=not problems,
        connected=True,
        edge_ready=edge_ready,
        controller_ready=controller_ready,
        reason="; ".join(problems) or ", ".join(well),
    )


def decide_health(
    recorded: Health | None,
    observed: Health,
    differs_since: datetime | None,
    now: datetime,
    *,
    settle: timedelta = SETTLE,
) -> tuple[bool, datetime | None]:
    """(record `observed` now?, since when it differs from what is recorded)."""
    if observed.key == (recorded or WELL).key:
        return False, None
    if differs_since is None:
        return settle <= timedelta(0), now
    return now - differs_since >= settle, differs_since


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ClusterHealthWatch:
    store: EventStore
    last_seen: Callable[[], Mapping[str, datetime]]
    edge_status: Callable[[], Mapping[str, EdgeStatus]]
    registered: Callable[[], Iterable[str]]
    clock: Callable[[], datetime] = utc_now
    offline_after: timedelta = OFFLINE_AFTER
    settle: timedelta = SETTLE
    interval_s: float = 5.0
    recorded: dict[str, Health] | None = None
    _differs_since: dict[str, datetime] = field(default_factory=dict)

    async def load(self) -> dict[str, Health]:
        """What was recorded last per cluster (a deregistered cluster starts afresh)."""
        recorded: dict[str, Health] = {}
        async for stored in self.store.read(subject=f"{EVENTS_PREFIX}.cluster.>"):
            event = stored.event
            if isinstance(event, ClusterHealthChanged):
                recorded[event.cluster] = Health(
                    healthy=event.healthy,
                    connected=event.connected,
                    edge_ready=event.edge_ready,
                    controller_ready=event.controller_ready,
                    reason=event.reason,
                )
            elif isinstance(event, ClusterDeregistered):
                recorded.pop(event.cluster, None)
        self.recorded = recorded
        return recorded

    async def check(self) -> list[ClusterHealthChanged]:
        """Judge every registered cluster heard from; record the changes that lasted."""
        recorded = self.recorded if self.recorded is not None else await self.load()
        now = self.clock()
        seen, edges = self.last_seen(), self.edge_status()
        registered = set(self.registered())
        for gone in set(self._differs_since) - registered:
            del self._differs_since[gone]
        changes = []
        for cluster in sorted(registered):
            observed = observe_health(
                seen.get(cluster), edges.get(cluster), now, offline_after=self.offline_after
            )
            if observed is None:
                continue
            record, since = decide_health(
                recorded.get(cluster),
                observed,
                self._differs_since.get(cluster),
                now,
                settle=self.settle,
            )
            if since is None:
                self._differs_since.pop(cluster, None)
            else:
                self._differs_since[cluster] = since
            if not record:
                continue
            event = ClusterHealthChanged(
                id=new_event_id(),
                occurred_at=now,
                actor="hub:cluster-health",
                cluster=cluster,
                healthy=observed.healthy,
                connected=observed.connected,
                edge_ready=observed.edge_ready,
                controller_ready=observed.controller_ready,
                reason=observed.reason,
                last_seen=seen.get(cluster),
            )
            await self.store.append([event])
            recorded[cluster] = observed
            self._differs_since.pop(cluster, None)
            changes.append(event)
            log.info(
                "cluster %s is %s: %s",
                cluster,
                "healthy again" if observed.healthy else "unhealthy",
                observed.reason,
            )
        return changes

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except EventLogError as e:
                log.warning("cluster health not checked: %s", e)
            await asyncio.sleep(self.interval_s)
