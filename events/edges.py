"""Names that tie one cluster's edge to the hub: JetStream domains, streams, consumers, prefixes.

The hub (which provisions and sources), the edge (which creates its outbox and mirror) and every
reader of REPORTS (which attributes reports) must agree on these names, so they live here and
nowhere else. All of them are derived from the cluster name, a DNS-1123 label, so each is one
valid subject token.

Origin of a report: the hub copies each edge outbox into REPORTS and writes the
`Nats-Stream-Source` header itself (`REPORTS-<cluster>:<hash> <seq> ...`). That header, not the
subject nor the payload (both written by the edge), says which cluster a report came from.
"""

from __future__ import annotations

from collections.abc import Mapping

EDGE_DOMAIN_PREFIX = "edge-"
OUTBOX_PREFIX = "REPORTS-"
MIRROR_PREFIX = "DESIRED-"
DURABLE_PREFIX = "edge-"
SYNC_PREFIX = "fleet.sync"
"""Delivery subjects of the hub's sourcing and the edges' mirrors; no stream captures them."""

CONNECTION_LABEL = "fleetbus.io/connection"
"""Cluster label saying how its edge reaches the hub: `leaf` (default) or `client`."""
LEAF = "leaf"
CLIENT = "client"
"""A cluster that connects as a plain NATS client of the hub (large simulated fleets): its
outbox is a stream in the hub's own domain and it pulls its durable consumer directly."""

SOURCE_HEADER = "Nats-Stream-Source"


def edge_domain(cluster: str) -> str:
    """The JetStream domain of the cluster's leaf nats-server."""
    return f"{EDGE_DOMAIN_PREFIX}{cluster}"


def outbox_stream(cluster: str) -> str:
    """The stream capturing the cluster's reports (`fleet.report.<cluster>.>`)."""
    return f"{OUTBOX_PREFIX}{cluster}"


def mirror_stream(cluster: str) -> str:
    """The edge's filtered mirror of its own DESIRED subjects."""
    return f"{MIRROR_PREFIX}{cluster}"


def desired_durable(cluster: str) -> str:
    """The hub-provisioned durable pull consumer on DESIRED for this cluster."""
    return f"{DURABLE_PREFIX}{cluster}"


def reports_deliver_prefix(cluster: str) -> str:
    """Where the edge delivers its outbox to the hub's REPORTS sourcing."""
    return f"{SYNC_PREFIX}.reports.{cluster}"


def desired_deliver_prefix(cluster: str) -> str:
    """Where the hub delivers DESIRED messages to the edge's mirror."""
    return f"{SYNC_PREFIX}.desired.{cluster}"


def inbox_prefix(cluster: str) -> str:
    """The inbox prefix a cluster's connections use, so replies can be permitted per cluster."""
    return f"_INBOX.{cluster}"


def connection_of(labels: Mapping[str, str]) -> str:
    return CLIENT if labels.get(CONNECTION_LABEL) == CLIENT else LEAF


def report_origin(headers: Mapping[str, str] | None) -> str | None:
    """The cluster a REPORTS message came from, by the source header the hub wrote; else None."""
    if not headers:
        return None
    source = headers.get(SOURCE_HEADER, "")
    stream = source.split(" ", 1)[0].split(":", 1)[0]
    if not stream.startswith(OUTBOX_PREFIX):
        return None
    cluster = stream[len(OUTBOX_PREFIX) :]
    return cluster or None
