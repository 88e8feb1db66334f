"""`fleetbus api`: one more API process of a hub, beside `fleetbus up`, on the hub's NATS.

A hub on a NATS cluster (`fleetbus up --nats-url ... --replicas 3`) can serve its HTTP API
from several processes, on several hosts, behind a load balancer or listed together on the CLI
(`--server URL1,URL2`). Each API process folds the log into read models of its own
(`projector.db` in its data dir) and answers any request: the log, the tokens (stream TOKENS,
`api.token_stream`) and the snapshots are in JetStream, shared by all of them. Any of them
registers and removes clusters and issues their bundles, with the hub's CA and NATS operator.

An API process runs no scheduler (`fleetbus scheduler` processes, or the one in `fleetbus up`,
take the lease), and none of the services that must run once per hub (cluster access and
revocation, provisioning, anti-entropy, notifications, standing sources, the archiver): those
stay with `fleetbus up`. It follows the edges' inventory digests itself, so every replica
says which clusters are connected.

Its data dir holds what cannot be in the log: the credentials it logs in to NATS with, and
the keyring. `prepare_replica_dir` copies them from the hub's data dir (never its store, read
models, tokens, CA or NATS operator), each file 0600. What the CA and the NATS operator sign
with it takes at its start from stream HUB_SECRETS, where `fleetbus up` keeps them sealed with
the hub's data key (`fleetbus.hub_secrets`), and writes them into its data dir, 0600.

The keyring is shared by every process that uses the same directory (`--keys-dir`, on one
host or a shared filesystem): a copy opens what was sealed before it was made, but a
rotation or shredding made elsewhere reaches it only when it is copied again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from access.account_push import AccountPublisher
from access.private_files import write_private
from api.auth import StreamTickets, TokenStore
from api.context import ADMIN_TOKEN_FILE, HubContext
from api.oidc import OidcConfig, OidcVerifier
from api.token_stream import SharedTokenTable
from events.inventory import EdgeStatus, decode_inventory
from events.port import JetStreamPort
from events.sealed import EventSealer
from events.store import EventStore, connect
from events.streams import REPORTS_STREAM
from events.subjects import INVENTORY_PREFIX
from events.tasks import cancel_and_wait
from fleetbus.datadir import DataDir
from fleetbus.edgehub import cluster_leaf_urls, hub_pki
from fleetbus.enrollment import BundleEnrollment, LogStateHistory
from fleetbus.errors import HubNotFound, ServerFailed
from fleetbus.hub import handle_stop_signals, serve_api
from fleetbus.hub_secrets import HubSecrets
from fleetbus.natsserver import check_port_free
from fleetbus.renderer import ChartArchiveRenderer
from fleetbus.supervision import Supervisor
from projector.service import PROJECTION_FILE, ProjectorService
from scheduler.snapshot_store import SNAPSHOT_KEEP
from sealing.keyring import KEYRING_FILE, Keyring

log = logging.getLogger(__name__)

REPLICA_FILES = ("creds/hub.creds", "creds/sys.creds")
"""What an API process needs of the hub's data dir beside the keyring (`keys/`): its NATS
logins. What it signs with (the CA, the NATS operator) it takes from JetStream, sealed
(`fleetbus.hub_secrets`)."""


@dataclass(frozen=True)
class ApiOptions:
    data_dir: Path
    nats_urls: tuple[str, ...]
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_host: str | None = None
    """The name edges dial (bundles' hub URLs of nodes listening on every address)."""
    replicas: int = 1
    """Replicas of the TOKENS stream when this process is the first to create it."""
    snapshot_keep: int = SNAPSHOT_KEEP
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_issue: bool = False
    oidc: OidcConfig | None = None
    keys_dir: Path | None = None
    """The hub's keyring, shared (same host or a shared filesystem); None: `keys/` of
    `data_dir`, a copy."""


def missing_replica_files(data: DataDir, keys_dir: Path | None = None) -> list[str]:
    """What an API process's data dir lacks (relative paths), empty when it has everything."""
    missing = [name for name in REPLICA_FILES if not (data.root / name).is_file()]
    keys = keys_dir or data.keys_dir
    if not (keys / KEYRING_FILE).is_file() or not any(keys.glob("kek-*.key")):
        missing.append(str(keys_dir) if keys_dir else "keys/")
    return missing


def prepare_replica_dir(hub: DataDir, replica: DataDir) -> list[str]:
    """Copy into `replica` what an API process needs of the hub's data dir `hub`; the paths
    copied. Refused, with nothing copied, when `hub` lacks any of it."""
    missing = missing_replica_files(hub)
    if missing:
        raise HubNotFound(
            f"{hub.root} is not a hub's data dir (no {', '.join(missing)}): give the data dir "
            "of a hub started with `fleetbus up`"
        )
    if replica.root.resolve() == hub.root.resolve():
        raise HubNotFound(f"{replica.root} is the hub's own data dir: give another one")
    replica.create()
    # Not while an API process runs on it (DataDirLocked names the dir).
    replica.lock().close()
    copied: list[str] = []
    for name in REPLICA_FILES:
        target = replica.root / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(target, (hub.root / name).read_bytes())
        copied.append(name)
    fresh = replica.root / "keys.new"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(hub.keys_dir, fresh, ignore=shutil.ignore_patterns("*.lock", "*.tmp"))
    fresh.chmod(0o700)
    for path in fresh.iterdir():
        path.chmod(0o600)
    shutil.rmtree(replica.keys_dir, ignore_errors=True)
    fresh.rename(replica.keys_dir)
    copied.append("keys/")
    return copied


class InventoryWatch:
    """When each cluster last sent an inventory digest, and what its connector said of itself:
    what `fleetbus up`'s anti-entropy knows, followed here without repairing anything."""

    def __init__(self, store: EventStore) -> None:
        self.port = JetStreamPort(store.api)
        self.last_seen: dict[str, datetime] = {}
        self.edge_status: dict[str, EdgeStatus] = {}

    async def run(self) -> None:
        async for subject, payload in self.port.messages(f"{INVENTORY_PREFIX}.*", backlog=10_000):
            cluster = subject.rsplit(".", 1)[-1]
            try:
                inventory = decode_inventory(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # anti-entropy in `fleetbus up` logs malformed digests
            if inventory.cluster != cluster:
                continue
            self.last_seen[cluster] = datetime.now(UTC)
            if inventory.edge is not None:
                self.edge_status[cluster] = inventory.edge


async def run_api(options: ApiOptions) -> None:
    """Serve the API until SIGINT/SIGTERM; everything started is stopped in reverse order."""
    data = DataDir(options.data_dir)
    missing = missing_replica_files(data, options.keys_dir)
    if missing:
        raise HubNotFound(
            f"{data.root} lacks {', '.join(missing)}: prepare it from the hub's data dir with "
            f"`fleetbus api --data-dir {data.root} --from-data-dir HUB_DATA_DIR ...` (or copy "
            "those files)"
        )
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(data.lock())
        stack.callback(data.hub_json.unlink, missing_ok=True)
        check_port_free(options.http_host, options.http_port, "--http")
        stop = handle_stop_signals(stack)
        supervisor = Supervisor()
        stack.push_async_callback(supervisor.stop)
        nats_urls = list(options.nats_urls)
        nc = await connect(nats_urls, name="fleetbus-api", credentials=data.hub_credentials)
        keyring = Keyring.open(options.keys_dir) if options.keys_dir else data.keyring()
        store = EventStore(nc, sealer=EventSealer(keyring))
        stack.push_async_callback(store.close)
        hub_secrets = HubSecrets(store, keyring)
        restored = await hub_secrets.restore(data.root)
        if restored:
            log.info("took the hub's %s from JetStream", ", ".join(restored))
        stack.push_async_callback(supervisor.stop)
        tokens = TokenStore(await SharedTokenTable.open(store, replicas=options.replicas))
        projector = ProjectorService(
            store, store.on_stream(REPORTS_STREAM), data.root / PROJECTION_FILE
        )
        supervisor.start(
            "projector", lambda: projector.run(supervisor.stop_event), watches_stop=True
        )
        inventory = InventoryWatch(store)
        supervisor.start("inventory", inventory.run)
        context = HubContext.for_store(store, options.data_dir, tokens=tokens)
        context.tickets = StreamTickets(key=await hub_secrets.ticket_key())
        context.read_generation = lambda: projector.generation
        context.last_seen = lambda: inventory.last_seen
        context.edge_status = lambda: inventory.edge_status
        if options.oidc is not None:
            context.sso = OidcVerifier(options.oidc)
        await tokens.ensure_admin_token(options.data_dir / ADMIN_TOKEN_FILE, now=datetime.now(UTC))
        context.renderer = ChartArchiveRenderer(context.charts)
        context.history = LogStateHistory(
            store, context.renderer, snapshot_keep=options.snapshot_keep
        )
        context.snapshots = context.history
        publisher = AccountPublisher(nats_urls, data.system_credentials)
        context.enrollment = BundleEnrollment(
            pki=hub_pki(data),
            hub_urls=await cluster_leaf_urls(publisher, options.public_host),
            authority=data.nats_authority(),
        )
        api = serve_api(stack, context, options, hub_pki(data))
        tls, serving = api.tls, api.task
        info: dict[str, Any] = {
            "nats_url": nats_urls[0],
            "nats_urls": nats_urls,
            "http_url": api.url,
            "data_dir": str(options.data_dir.resolve()),
            "role": "api",
        }
        if tls is not None:
            info["api_tls_fingerprint"] = tls.fingerprint
            if tls.ca_file is not None:
                info["api_ca_file"] = str(tls.ca_file.resolve())
        data.write_hub_info(info)
        log.info("fleetbus api up: %s  nats %s  (Ctrl-C to stop)", info["http_url"], nats_urls)
        stopped = asyncio.create_task(stop.wait())
        stack.push_async_callback(cancel_and_wait, [stopped])
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done() and not stop.is_set():
            exc = serving.exception()
            raise ServerFailed(f"HTTP server stopped: {exc or 'could not serve'}")
