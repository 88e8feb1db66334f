"""The connector's health: live while its loops run, ready when connected to the hub and caught up.

"Caught up" means three things, each checked from what the edge itself can see:
- the leaf's mirror of DESIRED has copied everything the hub had for this cluster (its lag, as
  last told by the hub, is zero);
- the connector has been handed everything the mirror holds (the stream sequence of its last
  delivery reaches the mirror's last sequence);
- every report it made is stored in the outbox (from where the hub sources it).

The cluster controller's health reaches the hub the same way: the connector reads the
controller replicas' heartbeat Leases (`kube_contract.controller_status`), judges them here
(`controller_status`) and sends the verdict with its own in each inventory digest.

A connector cut from the hub keeps applying what it holds, but is not ready: what it holds may
be stale and its reports wait in the outbox. The decision is pure (`connector_readiness`); the
adapter that looks at the leaf is `edge_connector.jetstream.LeafHubLink`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

import msgspec

from events.inventory import ControllerReplica, ControllerStatus
from kube_contract.controller_status import ReplicaHeartbeat


@dataclass(frozen=True)
class HubLinkState:
    """What the leaf knows of its link to the hub and of its mirror of the desired state."""

    connected: bool
    detail: str
    """Why not connected (or the hub's address when connected)."""
    mirror_last_seq: int = 0
    mirror_lag: int = 0
    """Messages of DESIRED the mirror has not copied yet (as of its last contact with the hub)."""


class HubLink(Protocol):
    async def state(self) -> HubLinkState: ...


class Companion(Protocol):
    """Another component of the connector's process (the cluster controller, when the edge runs
    it in the same process): its health joins the connector's readiness, so a failing companion
    reaches the hub in the inventory digest instead of going unnoticed."""

    @property
    def name(self) -> str: ...

    def health(self) -> tuple[bool, str]:
        """(healthy, why): healthy once it runs and is ready; the reason names a failure."""
        ...


def companions_readiness(companions: Sequence[Companion]) -> tuple[bool, str]:
    """Healthy when every companion is; otherwise the first failing one, by name."""
    for companion in companions:
        healthy, reason = companion.health()
        if not healthy:
            return False, f"{companion.name} not ready: {reason}"
    return True, ""


@dataclass(frozen=True)
class ConnectorProgress:
    """The connector's own counters, read from the running connector."""

    delivered_seq: int
    """Stream sequence of the last desired-state message handed to the connector (0: none)."""
    feed_pending: int
    """Messages the feed still had behind its last delivery."""
    outbox_pending: int
    """Reports made but not yet stored in the outbox."""
    held: int
    failing: int
    reported: int


def connector_readiness(link: HubLinkState, progress: ConnectorProgress) -> tuple[bool, str]:
    """Ready only when connected to the hub and caught up; the reason names what is missing."""
    if not link.connected:
        return False, f"not connected to the hub: {link.detail}"
    if link.mirror_lag > 0:
        return False, f"desired state mirror {link.mirror_lag} message(s) behind the hub"
    if progress.delivered_seq < link.mirror_last_seq:
        behind = link.mirror_last_seq - progress.delivered_seq
        return False, f"{behind} desired state message(s) not yet read by the connector"
    if progress.feed_pending > 0:
        return False, f"{progress.feed_pending} desired state message(s) still to be read"
    if progress.outbox_pending > 0:
        return False, f"{progress.outbox_pending} report(s) not yet stored in the outbox"
    return True, f"connected to the hub ({link.detail}) and caught up"


EdgeReadiness = tuple[bool, bool | None]
"""What the hub's view of an edge's health turns on: (the connector ready, the cluster controller
ready or None when there is none). A change of either is told to the hub at once; a change of
wording alone (a lag counting down) waits for the regular digest."""


def edge_readiness(ready: bool, controller: ControllerStatus | None) -> EdgeReadiness:
    return ready, controller.ready if controller is not None else None


def immediate_send_delay(last_sent: float | None, now: float, min_gap: float) -> float:
    """How long a digest asked for at once must still wait so that two digests are at least
    `min_gap` apart (monotonic seconds; `last_sent` None: none sent yet). A readiness that
    flaps thus reaches the hub at most once per gap, and the digest sent at the end of the gap
    carries the state of that moment: the last state is always told."""
    if last_sent is None:
        return 0.0
    return max(0.0, last_sent + min_gap - now)


NO_CONTROLLER = (
    "no cluster controller has reported its health (is `fleetbus controller` running, "
    "with --lease-namespace set to the connector's namespace?)"
)


def _replica(beat: ReplicaHeartbeat, now: datetime) -> ControllerReplica:
    stale = beat.renewed_at is None or now - beat.renewed_at > timedelta(
        seconds=max(beat.duration_s, 1)
    )
    said = beat.heartbeat
    if said is None:
        return ControllerReplica(
            name=beat.name, reason=beat.problem, heard_at=beat.renewed_at, stale=stale
        )
    return ControllerReplica(
        name=beat.name,
        role=said.role,
        ready=said.ready and said.live and not stale,
        reason=said.reason,
        version=said.version,
        watches=dict(said.watches),
        last_error=said.last_error,
        last_error_at=said.last_error_at,
        heard_at=beat.renewed_at,
        stale=stale,
        stopped=not said.live,
    )


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{max(0, int((now - moment).total_seconds()))}s ago"


def controller_status(
    replicas: list[ReplicaHeartbeat], now: datetime, *, error: str = ""
) -> ControllerStatus:
    """Judge the controller replicas' heartbeats: ready when a fresh replica reconciles (it
    leads, or no election is held) and says its watches are synced; the reason names what is
    wrong otherwise (no heartbeat, a stale one, a stopped replica, watches not synced)."""
    seen = sorted(
        (_replica(beat, now) for beat in replicas),
        key=lambda r: r.heard_at or datetime.min.replace(tzinfo=now.tzinfo),
        reverse=True,
    )
    errors = [r for r in seen if r.last_error and r.last_error_at is not None]
    newest_error = max(errors, key=lambda r: r.last_error_at or now, default=None)
    base = ControllerStatus(
        replicas=seen,
        last_error=newest_error.last_error if newest_error else "",
        last_error_at=newest_error.last_error_at if newest_error else None,
    )
    verdict = partial(msgspec.structs.replace, base)
    if error:
        return verdict(ready=False, reason=f"cannot read the controller's heartbeat: {error}")
    if not seen:
        return verdict(ready=False, reason=NO_CONTROLLER)
    fresh = [r for r in seen if not r.stale]
    if not fresh:
        last = seen[0]
        if last.stopped:
            return verdict(
                ready=False,
                reason=f"the cluster controller stopped {_ago(last.heard_at, now)}: "
                f"controller {last.name}: {last.reason}",
                version=last.version,
            )
        said = f" (it last said: {last.reason})" if last.reason else ""
        return verdict(
            ready=False,
            reason=f"the cluster controller has not reported since {_ago(last.heard_at, now)}: "
            f"replica {last.name} stopped or cannot reach the Kubernetes API{said}",
            version=last.version,
        )
    working = [r for r in fresh if r.role in ("leader", "single")]
    if not working:
        return verdict(
            ready=False,
            reason=f"no controller replica reconciles: {len(fresh)} standing by for the "
            "leader Lease",
            version=fresh[0].version,
        )
    lead = working[0]
    synced = all(lead.watches.values()) if lead.watches else None
    if not lead.ready:
        return verdict(
            ready=False,
            reason=f"controller {lead.name}: {lead.reason or 'not ready'}",
            version=lead.version,
            leader=lead.name,
            watches_synced=synced,
        )
    return verdict(
        ready=True,
        reason=f"controller {lead.name}: {lead.reason}",
        version=lead.version,
        leader=lead.name,
        watches_synced=synced,
    )


Sample = tuple[str, str, str, float, dict[str, str]]
"""(name, type, help, value, labels): one Prometheus sample."""


def controller_samples(controller: ControllerStatus) -> list[Sample]:
    """The controller's health as the connector judged it (and as the hub hears it)."""
    return [
        (
            "fleetbus_edge_controller_ready",
            "gauge",
            "1 when a cluster controller replica reconciles with its watches synced, as its "
            "heartbeat says.",
            controller.ready,
            {},
        ),
        (
            "fleetbus_edge_controller_replicas",
            "gauge",
            "Cluster controller replicas whose heartbeat is fresh.",
            sum(1 for r in controller.replicas if not r.stale),
            {},
        ),
    ]


def connector_metrics(
    cluster: str,
    version: str,
    link: HubLinkState,
    progress: ConnectorProgress,
    ready: bool,
    controller: ControllerStatus | None = None,
) -> list[Sample]:
    samples = controller_samples(controller) if controller is not None else []
    return [
        *samples,
        (
            "fleetbus_edge_info",
            "gauge",
            "The edge connector's cluster and version.",
            1,
            {"cluster": cluster, "version": version},
        ),
        ("fleetbus_edge_ready", "gauge", "1 when connected to the hub and caught up.", ready, {}),
        (
            "fleetbus_edge_hub_connected",
            "gauge",
            "1 while the leaf is connected to the hub.",
            link.connected,
            {},
        ),
        (
            "fleetbus_edge_desired_mirror_lag_messages",
            "gauge",
            "Messages of the desired state the leaf's mirror has not copied yet.",
            link.mirror_lag,
            {},
        ),
        (
            "fleetbus_edge_desired_unread_messages",
            "gauge",
            "Desired-state messages the mirror holds that the connector has not read.",
            max(0, link.mirror_last_seq - progress.delivered_seq),
            {},
        ),
        (
            "fleetbus_edge_tasksets_held",
            "gauge",
            "Tasksets whose desired state the connector holds.",
            progress.held,
            {},
        ),
        (
            "fleetbus_edge_tasksets_failing",
            "gauge",
            "Tasksets whose last apply failed (retried with backoff).",
            progress.failing,
            {},
        ),
        (
            "fleetbus_edge_reports_stored_total",
            "counter",
            "Report events stored in the outbox since start.",
            progress.reported,
            {},
        ),
        (
            "fleetbus_edge_outbox_pending_reports",
            "gauge",
            "Reports made but not yet stored in the outbox.",
            progress.outbox_pending,
            {},
        ),
    ]
