"""Which NATS users the hub admits, and what each may do: folded from the log.

Every registered cluster is one NATS user, known by its user key, in its project's account:
FLEET for the default project, `project-<name>` otherwise (joined to FLEET by exports and
imports of exactly that cluster's subjects, `access.project_links`). A leaf
cluster's key is derived from its certificate's fingerprint (`NatsAuthority.cluster_user_key`),
and its user JWT travels in its bundle (`leaf_credentials`): the edge's leaf connection shows
the certificate (TLS with client certificates from the fleetbus CA, `LeafListener`) and the
credentials together. The user may only connect as a leaf node (`allowed_connection_types`),
and its permissions are written from the edge's side: `publish` is what the edge may send into
the hub, `subscribe` what the hub may send down to it. Nothing in them names another cluster,
so cluster A can neither read B's desired state nor speak as B.

Large simulated fleets connect their clusters as plain clients of the hub instead (connection
`client`): a user per cluster with a key derived from the account's seed, on the loopback
client port, with the same rights expressed from the client's side.

Revocation: a user key admitted before a change and not after is listed in the accounts'
`revocations` (`evolve_revocations`); pushing the account JWTs reaches every server.

Everything here is pure: the folds `evolve_access` and `evolve_revocations`, the permission
sets and the credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from access.errors import AccessError
from access.nats_accounts import FLEET_ACCOUNT, NatsAuthority, ProjectLimits, account_of_project
from access.nats_jwt import Nkey, credentials_file, new_nkey, user_jwt
from access.pki import CLUSTER_VALIDITY, HubPki, cluster_identity
from access.project_links import project_reply_rights
from events import edges, subjects
from events.catalog import (
    ClusterDeregistered,
    ClusterLabelsChanged,
    ClusterRegistered,
    Event,
)
from events.streams import DESIRED_STREAM, HUB_DOMAIN
from taskset.projects import project_of

log = logging.getLogger(__name__)

RESERVED_NAMES = frozenset({"hub", "sys", "fleetbus", "connector"})
"""NATS user names the hub and edges use for themselves; no cluster may take one."""

LEAF_CONNECTION_TYPES = ("LEAFNODE", "LEAFNODE_WS")


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


def client_user_key(account: Nkey, cluster: str) -> Nkey:
    """The user key of a `client` cluster, derived from its account's seed (nothing to store)."""
    raw = hmac.new(account.seed.encode(), f"client:{cluster}".encode(), hashlib.sha256).digest()
    return new_nkey("user", raw)


def client_credentials(account: Nkey, cluster: str, *, now: float) -> str:
    """The `.creds` of a cluster that connects as a plain client (large simulated fleets)."""
    return credentials_file(
        user_jwt(
            client_user_key(account, cluster).public,
            account,
            cluster,
            iat=int(now),
            publish=client_permissions(cluster)["publish"],
            subscribe=client_permissions(cluster)["subscribe"],
            connection_types=["STANDARD"],
        ),
        client_user_key(account, cluster).seed,
    )


def leaf_credentials(
    authority: NatsAuthority, cluster: str, fingerprint: str, *, expires: datetime
) -> str:
    """The `.creds` of a leaf cluster's certificate (in its bundle): a user of its project's
    account (FLEET for the default project) with the key derived from the certificate's
    fingerprint, its rights `leaf_permissions` (and `_R_.>` outside FLEET, see
    `access.project_links`), leaf connections only, expiring with the certificate
    (`expires`), so its revocation can be forgotten then."""
    if cluster in RESERVED_NAMES:
        raise AccessError(f"cluster name {cluster!r} is reserved for the hub's own NATS users")
    account = account_of_project(project_of(cluster))
    if account not in authority.accounts:
        # Its key is made now; the account reaches the servers with the cluster's links when
        # the registration is made effective, and its limits with the project's quotas.
        authority.ensure_project_account(project_of(cluster), ProjectLimits())
    permissions = leaf_permissions(cluster)
    permissions["publish"]["allow"] += project_reply_rights(cluster)
    return authority.user_credentials(
        account,
        authority.cluster_user_key(cluster, fingerprint.removeprefix("sha256:").lower()),
        cluster_identity(cluster, fingerprint.removeprefix("sha256:").lower()),
        permissions=permissions,
        connection_types=list(LEAF_CONNECTION_TYPES),
        expires=int(expires.timestamp()),
    )


REVOCATION_KEPT = CLUSTER_VALIDITY + timedelta(days=1)
"""How long a revoked key stays listed: past it, every JWT of that key has expired (a leaf
cluster's expires with its certificate; a client cluster signs a new one at each connection,
issued after any revocation anyway)."""


def current_revocations(revocations: Mapping[str, int], now: datetime) -> dict[str, int]:
    """The revocations an account JWT must still carry at `now` (the rest have expired)."""
    oldest = int((now - REVOCATION_KEPT).timestamp())
    return {key: at for key, at in revocations.items() if at >= oldest}


def user_key_of(authority: NatsAuthority, access: ClusterAccess) -> str | None:
    """The public user key the hub admits for `access` (None: no certificate on record)."""
    if access.connection == edges.CLIENT:
        return client_user_key(authority.account(FLEET_ACCOUNT), access.name).public
    if not access.fingerprint:
        return None
    return authority.cluster_user_key(access.name, access.fingerprint).public


def evolve_revocations(
    revocations: Mapping[str, int],
    before: Mapping[str, ClusterAccess],
    after: Mapping[str, ClusterAccess],
    *,
    at: int,
    key_of: Callable[[ClusterAccess], str | None],
) -> dict[str, int]:
    """The revoked user keys after a change of the registered set: every key admitted before
    and not after is revoked as of `at` (its JWTs issued until then are refused); a key
    admitted again (a client cluster registered anew) is no longer revoked."""
    updated = dict(revocations)
    admitted = {key for access in after.values() if (key := key_of(access)) is not None}
    for name in revoked_clusters(before, after):
        key = key_of(before[name])
        if key is not None and key not in admitted:
            updated[key] = max(at, updated.get(key, 0))
    for key in admitted:
        updated.pop(key, None)
    return updated


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
            "    verify: true",
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


# --- revocation -----------------------------------------------------------------------------------


def revoked_clusters(
    before: Mapping[str, ClusterAccess], after: Mapping[str, ClusterAccess]
) -> set[str]:
    """Clusters whose admitted certificate (or way of connecting) is no longer the same."""
    return {name for name, access in before.items() if after.get(name) != access}
