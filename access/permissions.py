"""Which NATS users the hub's nats-server has, and what each may do: folded from the log.

Every registered cluster is one NATS user in the FLEET account. A leaf cluster's user is mapped
from its client certificate (`verify_and_map`, DNS SAN `<cluster>.<key id>`, see `access.pki`:
the user exists only for the certificate on record, so re-registering revokes the old one), may
only connect as a leaf node (`allowed_connection_types`), and its permissions are written from
the edge's side: `publish` is what the edge may send into the hub, `subscribe` what the hub may
send down to it. Nothing in them names another cluster, so cluster A can neither read B's
desired state nor speak as B.

Large simulated fleets connect their clusters as plain clients of the hub instead (connection
`client`): a password user per cluster on the loopback client port, with the same rights
expressed from the client's side.

Everything here is pure: the fold `evolve_access`, the permission sets and the rendered users.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from access.pki import HubPki, cluster_identity
from events import edges, subjects
from events.catalog import (
    ClusterDeregistered,
    ClusterLabelsChanged,
    ClusterRegistered,
    Event,
)
from events.streams import DESIRED_STREAM, HUB_DOMAIN

log = logging.getLogger(__name__)

RESERVED_NAMES = frozenset({"hub", "sys", "fleetbus", "connector"})
"""NATS user names the hub and edges use for themselves; no cluster may take one."""

LEAF_CONNECTION_TYPES = ("LEAFNODE", "LEAFNODE_WS")
FLEET_ACCOUNT = "FLEET"


class ClusterAccess(msgspec.Struct, frozen=True, kw_only=True):
    """What the hub's nats-server needs to know about one registered cluster."""

    name: str
    fingerprint: str = ""
    """Hex SHA-256 of the cluster certificate's public key (nats `pinned_certs` form)."""
    connection: str = edges.LEAF


# --- the fold -----------------------------------------------------------------------------------


def evolve_access(clusters: Mapping[str, ClusterAccess], event: Event) -> dict[str, ClusterAccess]:
    """The registered clusters after `event` (events of other aggregates change nothing)."""
    updated = dict(clusters)
    match event:
        case ClusterRegistered():
            updated[event.cluster] = ClusterAccess(
                name=event.cluster,
                fingerprint=event.certificate_fingerprint.removeprefix("sha256:").lower(),
                connection=edges.connection_of(event.labels),
            )
        case ClusterLabelsChanged() if event.cluster in updated:
            current = updated[event.cluster]
            updated[event.cluster] = msgspec.structs.replace(
                current, connection=edges.connection_of(event.labels)
            )
        case ClusterDeregistered():
            updated.pop(event.cluster, None)
    return updated


# --- permissions ----------------------------------------------------------------------------------


def _js_hub(api: str) -> str:
    return f"$JS.{HUB_DOMAIN}.API.{api}"


def _desired_rights(cluster: str, api: Callable[[str], str] = _js_hub) -> list[str]:
    durable = edges.desired_durable(cluster)
    return [
        api(f"CONSUMER.MSG.NEXT.{DESIRED_STREAM}.{durable}"),
        api(f"CONSUMER.INFO.{DESIRED_STREAM}.{durable}"),
        f"$JS.ACK.{DESIRED_STREAM}.{durable}.>",
        f"$JS.ACK.{HUB_DOMAIN}.*.{DESIRED_STREAM}.{durable}.>",
        api(f"DIRECT.GET.{DESIRED_STREAM}.{subjects.desired_filter(cluster)}"),
    ]


def _js_local(api: str) -> str:
    return f"$JS.API.{api}"


def leaf_permissions(cluster: str) -> dict[str, dict[str, list[str]]]:
    """Rights of a cluster's leaf connection, written from the edge's side."""
    publish = [
        *_desired_rights(cluster),
        # The edge's filtered mirror asks for its consumer through the hub's consumer gate,
        # which forwards only a mirror's own consumer (`access.consumer_rules`).
        f"{edges.consumer_gate_prefix(cluster)}.>",
        f"$JS.FC.{DESIRED_STREAM}.>",
        f"{edges.reports_deliver_prefix(cluster)}.>",
        subjects.inventory_subject(cluster),
        subjects.keys_subject(cluster),
        "$JSC.R.>",
    ]
    subscribe = [
        f"{edges.inbox_prefix(cluster)}.>",
        f"$JS.{edges.edge_domain(cluster)}.API.>",
        f"{edges.desired_deliver_prefix(cluster)}.>",
        f"$JS.FC.{edges.outbox_stream(cluster)}.>",
        "$JSC.R.>",
    ]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def client_permissions(cluster: str) -> dict[str, dict[str, list[str]]]:
    """Rights of a cluster that connects as a plain client of the hub (large simulated fleets)."""
    # A client of the hub itself asks with the `$JS.hub.API` prefix, but the server maps it to
    # its local `$JS.API` before checking permissions: the rights name the mapped subjects.
    publish = [
        *_desired_rights(cluster, _js_local),
        subjects.report_filter(cluster),
        subjects.inventory_subject(cluster),
        subjects.keys_subject(cluster),
    ]
    subscribe = [f"{edges.inbox_prefix(cluster)}.>"]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def client_password(secret: str, cluster: str) -> str:
    """The password of a `client` cluster, derived from the hub's secret (nothing to store)."""
    return hmac.new(secret.encode(), f"cluster:{cluster}".encode(), hashlib.sha256).hexdigest()


def cluster_users(clusters: Iterable[ClusterAccess], secret: str) -> str:
    """The FLEET account's cluster users, one config entry per line (JSON is valid nats conf)."""
    lines = []
    for access in sorted(clusters, key=lambda a: a.name):
        if access.name in RESERVED_NAMES:
            log.warning("cluster %r uses a reserved name; it gets no NATS user", access.name)
            continue
        if access.connection == edges.CLIENT:
            user: dict[str, object] = {
                "user": access.name,
                "password": client_password(secret, access.name),
                "permissions": client_permissions(access.name),
                "allowed_connection_types": ["STANDARD"],
            }
        elif access.fingerprint:
            user = {
                "user": cluster_identity(access.name, access.fingerprint),
                "permissions": leaf_permissions(access.name),
                "allowed_connection_types": list(LEAF_CONNECTION_TYPES),
            }
        else:
            log.warning(
                "cluster %r has no certificate on record; register it with "
                "`fleetbus cluster register` to let its edge connect",
                access.name,
            )
            continue
        lines.append("      " + json.dumps(user, separators=(", ", ": ")))
    # Newlines separate array values in nats conf; the list follows the hub's own user.
    return "\n".join(lines)


@dataclass(frozen=True)
class LeafListener:
    """The hub's leafnode listener: TLS with client certificates, optionally also WebSocket."""

    pki: HubPki
    host: str = "0.0.0.0"
    port: int = 443
    ws_port: int | None = None

    def tls_block(self, *, timeout: float = 5.0) -> str:
        lines = [
            f'    cert_file: "{self.pki.server_cert}"',
            f'    key_file: "{self.pki.server_key}"',
            f'    ca_file: "{self.pki.ca_cert}"',
            "    verify_and_map: true",
            f"    timeout: {timeout}",
        ]
        return "  tls {\n" + "\n".join(lines) + "\n  }"

    def render(self) -> str:
        """The `leafnodes {}` (and `websocket {}`) blocks of the hub config."""
        text = f'leafnodes {{\n  listen: "{self.host}:{self.port}"\n{self.tls_block()}\n}}\n'
        if self.ws_port is not None:
            text += (
                f'websocket {{\n  listen: "{self.host}:{self.ws_port}"\n{self.tls_block()}\n}}\n'
            )
        return text


ConfigText = Callable[[str, str], str]
"""(leafnodes block, cluster users) -> the hub's whole nats-server config."""


# --- revocation -----------------------------------------------------------------------------------


def revoked_clusters(
    before: Mapping[str, ClusterAccess], after: Mapping[str, ClusterAccess]
) -> set[str]:
    """Clusters whose admitted certificate (or way of connecting) is no longer the same."""
    return {name for name, access in before.items() if after.get(name) != access}


def stale_leafs(
    leafs: Sequence[Mapping[str, object]], allowed: set[str], revoked: set[str]
) -> list[tuple[int, str]]:
    """(connection id, name) of the FLEET leaf connections to drop."""
    fleet = [leaf for leaf in leafs if leaf.get("account") == FLEET_ACCOUNT]
    names = Counter(str(leaf.get("name")) for leaf in fleet)
    return [
        (int(str(leaf["id"])), str(leaf.get("name")))
        for leaf in fleet
        if (name := str(leaf.get("name"))) in revoked or name not in allowed or names[name] > 1
    ]
