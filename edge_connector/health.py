"""The connector's health: live while its loops run, ready when connected to the hub and caught up.

"Caught up" means three things, each checked from what the edge itself can see:
- the leaf's mirror of DESIRED has copied everything the hub had for this cluster (its lag, as
  last told by the hub, is zero);
- the connector has been handed everything the mirror holds (the stream sequence of its last
  delivery reaches the mirror's last sequence);
- every report it made is stored in the outbox (from where the hub sources it).

A connector cut from the hub keeps applying what it holds, but is not ready: what it holds may
be stale and its reports wait in the outbox. The decision is pure (`connector_readiness`); the
adapter that looks at the leaf is `edge_connector.jetstream.LeafHubLink`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


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


Sample = tuple[str, str, str, float, dict[str, str]]
"""(name, type, help, value, labels): one Prometheus sample."""


def connector_metrics(
    cluster: str, version: str, link: HubLinkState, progress: ConnectorProgress, ready: bool
) -> list[Sample]:
    return [
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
