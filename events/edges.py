"""Names that tie one cluster's edge to the hub: JetStream domains, streams, consumers, prefixes.

The hub (which provisions and sources), the edge (which creates its outbox and mirror) and every
reader of REPORTS (which attributes reports) must agree on these names, so they live here and
nowhere else. All of them are derived from the cluster name, a DNS-1123 label, so each is one
valid subject token.

Origin of a report: the hub copies each leaf edge's outbox into REPORTS and writes the
`Nats-Stream-Source` header itself (`REPORTS-<cluster>:<hash> <seq> ...`). That header, not the
payload (written by the edge), says which cluster a report came from. A cluster connected as a
plain client publishes its reports straight into REPORTS, on subjects only it may publish on:
there the subject says it.
"""

from __future__ import annotations

from collections.abc import Mapping

from events.subjects import REPORT_PREFIX

EDGE_DOMAIN_PREFIX = "edge-"
OUTBOX_PREFIX = "REPORTS-"
MIRROR_PREFIX = "DESIRED-"
DURABLE_PREFIX = "edge-"
SYNC_PREFIX = "fleet.sync"
GATE_PREFIX = "fleet.jsapi"
"""Where an edge's mirror sends its JetStream API requests: the hub's consumer gate checks them."""
"""Delivery subjects of the hub's sourcing and the edges' mirrors; no stream captures them."""

CONNECTION_LABEL = "fleetbus.io/connection"
"""Cluster label saying how its edge reaches the hub: `leaf` (default) or `client`."""
LEAF = "leaf"
CLIENT = "client"
"""A cluster that connects as a plain NATS client of the hub (large simulated fleets): it
publishes its reports straight into REPORTS and pulls its durable consumer directly."""

SOURCE_HEADER = "Nats-Stream-Source"
REPORT_SUBJECTS = f"{REPORT_PREFIX}."


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


def consumer_gate_prefix(cluster: str) -> str:
    """The API prefix of the cluster's mirror: the hub's consumer gate, never JetStream itself."""
    return f"{GATE_PREFIX}.{cluster}"


def inbox_prefix(cluster: str) -> str:
    """The inbox prefix a cluster's connections use, so replies can be permitted per cluster."""
    return f"_INBOX.{cluster}"


def connection_of(labels: Mapping[str, str]) -> str:
    return CLIENT if labels.get(CONNECTION_LABEL) == CLIENT else LEAF


def report_origin(subject: str, headers: Mapping[str, str] | None) -> str | None:
    """The cluster a REPORTS message came from; None when nothing vouches for one.

    A copy sourced from an edge's outbox carries the source header the hub wrote: that names
    the outbox, hence the cluster. A report published straight into the hub by a cluster
    connected as a client has no such header; its subject vouches for it, because a client
    cluster may publish only on its own `fleet.report.<cluster>.>` and a leaf edge on none of
    them."""
    source = (headers or {}).get(SOURCE_HEADER, "")
    if source:
        stream = source.split(" ", 1)[0].split(":", 1)[0]
        if not stream.startswith(OUTBOX_PREFIX):
            return None
        return stream[len(OUTBOX_PREFIX) :] or None
    if not subject.startswith(REPORT_SUBJECTS):
        return None
    return subject[len(REPORT_SUBJECTS) :].split(".", 1)[0] or None
