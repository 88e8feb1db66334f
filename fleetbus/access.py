"""Who may connect to the hub's nats-server, and with what rights: rebuilt from the event log.

Every registered cluster is one NATS user in the FLEET account. A leaf cluster's user is mapped
from its client certificate (`verify_and_map`, DNS SAN `<cluster>.<key id>`, see `fleetbus.pki`:
the user exists only for the certificate on record, so re-registering revokes the old one), may
only connect as a leaf node (`allowed_connection_types`), and its permissions are written from
the edge's side: `publish` is what the edge may send into the hub, `subscribe` what the hub may
send down to it. Nothing in them names another cluster, so cluster A can neither read B's
desired state nor speak as B. Deregistering removes the user; on reload nats-server drops
its live leaf connection.

Large simulated fleets connect their clusters as plain clients of the hub instead (connection
`client`): a password user per cluster on the loopback client port, with the same rights
expressed from the client's side.

The set of clusters is never stored anywhere but the log: `ClusterAccessService` folds the
`fleet.evt.cluster.>` events at start, follows them, rewrites the server config and reloads
it, and records the last event it has made effective, which is what the API's cluster
registration and deregistration wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats.errors
import orjson

from events import edges, subjects
from events.catalog import (
    ClusterDeregistered,
    ClusterLabelsChanged,
    ClusterRegistered,
    Event,
)
from events.store import EventStore, connect
from events.streams import DESIRED_STREAM, HUB_DOMAIN
from events.tasks import cancel_and_wait
from fleetbus.datadir import DataDir, write_private
from fleetbus.errors import HubError
from fleetbus.natsserver import NatsServer
from fleetbus.pki import HubPki, cluster_identity

log = logging.getLogger(__name__)

CLUSTER_EVENTS = f"{subjects.EVENTS_PREFIX}.cluster.>"

RESERVED_NAMES = frozenset({"hub", "sys", "fleetbus", "connector"})
"""NATS user names the hub and edges use for themselves; no cluster may take one."""

LEAF_CONNECTION_TYPES = ("LEAFNODE", "LEAFNODE_WS")
FLEET_ACCOUNT = "FLEET"


class AccessError(HubError):
    """The hub could not make a change of cluster access effective."""


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
        # The edge's filtered mirror creates its own consumer; the server refuses a body
        # whose filter differs from the one in this subject.
        _js_hub(f"CONSUMER.CREATE.{DESIRED_STREAM}.*.{subjects.desired_filter(cluster)}"),
        f"$JS.FC.{DESIRED_STREAM}.>",
        f"{edges.reports_deliver_prefix(cluster)}.>",
        subjects.inventory_subject(cluster),
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


def leaf_connections(monitor_port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/leafz", timeout=2.0) as reply:
        leafz = orjson.loads(reply.read())
    return list(leafz.get("leafs") or [])


def hub_server_id(monitor_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=2.0) as reply:
        return str(orjson.loads(reply.read())["server_id"])


ConfigText = Callable[[str, str], str]
"""(leafnodes block, cluster users) -> the hub's whole nats-server config."""


# --- applying a change ----------------------------------------------------------------------------


def config_load_time(monitor_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=2.0) as reply:
        varz = orjson.loads(reply.read())
    return str(varz.get("config_load_time", ""))


def reload_and_wait(server: NatsServer, timeout: float = 10.0) -> None:
    """Reload the server's config and wait until it has taken effect (blocking)."""
    try:
        before = config_load_time(server.monitor_port)
    except (urllib.error.URLError, OSError) as e:
        raise AccessError(f"cannot read the hub's nats-server state: {e}") from e
    server.reload()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if config_load_time(server.monitor_port) != before:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise AccessError(
        f"the hub's nats-server did not reload its config within {timeout:.0f}s: "
        f"{server.log_tail()}"
    )


@dataclass
class AccessState:
    """The last cluster event the hub's nats-server config reflects."""

    path: Path

    def write(self, applied_seq: int, clusters: Mapping[str, ClusterAccess]) -> None:
        admitted = {name: access.fingerprint for name, access in sorted(clusters.items())}
        write_private(self.path, orjson.dumps({"applied_seq": applied_seq, "clusters": admitted}))


def access_state(data: DataDir) -> AccessState:
    return AccessState(data.root / "access.json")


class ClusterAccessService:
    """Keeps the hub's nats-server users and pinned certificates equal to the registered set."""

    def __init__(
        self,
        store: EventStore,
        *,
        server: NatsServer,
        data: DataDir,
        listener: LeafListener | None,
        config_text: ConfigText,
    ) -> None:
        self.store = store
        self.server = server
        self.data = data
        self.listener = listener
        self.config_text = config_text
        self.clusters: dict[str, ClusterAccess] = {}
        self.state = access_state(data)
        self.applied_seq = 0
        self._applied = asyncio.Condition()
        self._rendered = self._current_config()
        self._effective: dict[str, ClusterAccess] = {}

    def _current_config(self) -> str:
        try:
            return self.data.nats_conf.read_text()
        except FileNotFoundError:
            return ""

    def render(self) -> str:
        clusters = list(self.clusters.values())
        leaf_block = self.listener.render() if self.listener else ""
        users = cluster_users(clusters, self.data.secrets()["hub_password"])
        return self.config_text(leaf_block, users)

    async def apply(self, seq: int) -> None:
        """Write the config for the current set, reload if it changed, drop the leaf
        connections of revoked certificates, record `seq`."""
        text = self.render()
        if text != self._rendered:
            write_private(self.data.nats_conf, text.encode())
            await asyncio.to_thread(reload_and_wait, self.server)
            self._rendered = text
            log.info("hub access updated: %d clusters", len(self.clusters))
        revoked = revoked_clusters(self._effective, self.clusters)
        self._effective = dict(self.clusters)
        await self.drop_stale_leafs(revoked)
        self.applied_seq = seq
        self.state.write(seq, self.clusters)
        async with self._applied:
            self._applied.notify_all()

    async def drop_stale_leafs(self, revoked: set[str]) -> None:
        """Close leaf connections that no current certificate would admit.

        nats-server re-checks plain clients against the users on reload, but not accepted leaf
        connections, so the hub kicks them itself (system account `KICK` request). A leaf is
        known by the server name its edge gives itself (`edge-<cluster>`); besides the revoked
        clusters' leafs, any leaf whose name belongs to no registered cluster, or that shares
        its name with another leaf, is dropped: honest edges reconnect within a second, a
        revoked certificate cannot.

        The name is the edge's own claim. So on a revocation every other leaf must also prove
        it: a request on `$JS.edge-<cluster>.API` can only reach the leaf whose certificate is
        that cluster's (the hub lets no other leaf subscribe to it). A revoked edge that
        called itself by another cluster's name gets no such request and is dropped too.
        """
        leafs = await asyncio.to_thread(leaf_connections, self.server.monitor_port)
        allowed = {
            edges.edge_domain(a.name) for a in self.clusters.values() if a.connection == edges.LEAF
        }
        targets = stale_leafs(leafs, allowed, {edges.edge_domain(name) for name in revoked})
        if revoked:
            dropping = {cid for cid, _ in targets}
            rest = [
                (int(str(leaf["id"])), str(leaf.get("name")))
                for leaf in leafs
                if leaf.get("account") == FLEET_ACCOUNT and int(str(leaf["id"])) not in dropping
            ]
            proven = await asyncio.gather(*(self._answers_as(name) for _, name in rest))
            targets += [leaf for leaf, ok in zip(rest, proven, strict=True) if not ok]
        if not targets:
            return
        server_id = await asyncio.to_thread(hub_server_id, self.server.monitor_port)
        hub_secrets = self.data.secrets()
        nc = await connect(
            self.server.client_url,
            name="fleetbus-hub-access",
            user="sys",
            password=hub_secrets["sys_password"],
            max_reconnect_attempts=0,
        )
        try:
            for cid, name in targets:
                try:
                    await nc.request(
                        f"$SYS.REQ.SERVER.{server_id}.KICK",
                        orjson.dumps({"cid": cid}),
                        timeout=5.0,
                    )
                except (nats.errors.Error, TimeoutError) as e:
                    raise AccessError(f"could not drop the leaf connection of {name}: {e}") from e
                log.info("dropped leaf connection %s (%s)", cid, name)
        finally:
            await nc.close()

    async def _answers_as(self, leaf_name: str) -> bool:
        """Whether the leaf named `edge-<cluster>` serves that cluster's JetStream domain.

        The reply subject is under `$JSC.R.`, the only reply prefix a leaf may publish to."""
        nc = self.store.nc
        reply = f"$JSC.R.{secrets.token_hex(8)}"
        try:
            sub = await nc.subscribe(reply, max_msgs=1)
            try:
                await nc.publish(f"$JS.{leaf_name}.API.INFO", b"", reply=reply)
                answer = await sub.next_msg(timeout=2.0)
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        except (nats.errors.Error, TimeoutError):
            return False
        # Nobody subscribed: the server itself answers with status 503.
        return (answer.headers or {}).get("Status") != "503"

    async def wait_applied(self, seq: int) -> None:
        """Wait until the event at `seq` is effective (bound it with `asyncio.timeout`)."""
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_seq >= seq)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Replay the cluster events, make them effective, then follow new ones."""
        last = 0
        self.clusters = {}
        async for stored in self.store.read(subject=CLUSTER_EVENTS, skip_undecodable=True):
            self.clusters = evolve_access(self.clusters, stored.event)
            last = stored.seq
        await self.apply(last)
        if ready is not None:
            ready.set()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        async def follow() -> None:
            async for stored in self.store.follow(
                from_seq=last + 1, subject=CLUSTER_EVENTS, skip_undecodable=True
            ):
                await queue.put((stored.seq, stored.event))

        follower = asyncio.create_task(follow(), name="cluster-access-follow")
        getter: asyncio.Future[tuple[int, Event]] | None = None
        try:
            while True:
                if follower.done():
                    follower.result()
                    return
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, follower}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    continue
                seq, event = getter.result()
                self.clusters = evolve_access(self.clusters, event)
                # Coalesce a burst (a fleet registering at once) into one reload.
                while not queue.empty():
                    seq, event = queue.get_nowait()
                    self.clusters = evolve_access(self.clusters, event)
                await self.apply(seq)
        finally:
            await cancel_and_wait([follower, *([getter] if getter is not None else [])])
