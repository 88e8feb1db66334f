"""`fleetbus up`: the embedded hub — nats-server, the streams, the HTTP API — in one process tree.

The hub's nats-server runs as a child process with its JetStream store in the data dir; a
second `fleetbus up` on the same data dir resumes with every event. SIGINT/SIGTERM stop the HTTP
server, the services and then nats-server, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import uvicorn

from access.account_push import AccountPublisher
from access.nats_accounts import FLEET_ACCOUNT
from access.permissions import LeafListener
from access.pki import HubPki
from access.private_files import write_private
from api.app import create_app
from api.auth import StreamTickets, TokenStore
from api.context import ADMIN_TOKEN_FILE, TOKENS_FILE, HubContext
from api.oidc import OidcConfig, OidcVerifier
from api.tenancy import admit_publish
from api.token_stream import SharedTokenTable, migrate_token_file
from events.retention import RetentionPolicy
from events.sealed import EventSealer
from events.store import EventStore, connect
from events.streams import hub_streams, leases_stream
from events.tasks import cancel_and_wait
from fleetbus.api_tls import ApiTls, api_tls
from fleetbus.datadir import DataDir
from fleetbus.edgehub import (
    EdgeServices,
    cluster_leaf_urls,
    hub_pki,
    leaf_urls,
    prepare_listener,
    server_hosts,
)
from fleetbus.enrollment import LogStateHistory, connect_api_to_edges
from fleetbus.errors import ServerFailed
from fleetbus.hub_lease import HUB_LEASE_TTL_S, HubLease, hub_holder
from fleetbus.hub_secrets import HubSecrets
from fleetbus.hub_services import start_hub_services, start_notifications, start_source_service
from fleetbus.natsserver import (
    NatsServer,
    check_port_free,
    claim_server,
    free_port,
    render_template,
)
from fleetbus.renderer import ChartArchiveRenderer
from fleetbus.supervision import Supervisor
from scheduler.snapshot_retention import ARCHIVE_EVERY_S, EventsArchiver
from scheduler.snapshot_store import SNAPSHOT_EVERY, SNAPSHOT_KEEP
from sources.fetch import FetchPolicy
from sources.limits import SourceLimits
from sources.references import HostAllowList

log = logging.getLogger(__name__)


class _EmbeddedHttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the hub decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class HubOptions:
    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    nats_host: str = "127.0.0.1"
    nats_port: int = 4222
    leaf_port: int = 443
    sim_clusters: int = 0
    scheduler: bool = True
    snapshot_every: int = SNAPSHOT_EVERY
    snapshot_keep: int = SNAPSHOT_KEEP
    """Run a scheduler inside the hub; False leaves scheduling to `fleetbus scheduler`."""
    events_retention: RetentionPolicy | None = None
    """The window of events EVENTS keeps (the rest is archived); None keeps everything."""
    events_archive_every_s: float = ARCHIVE_EVERY_S
    sim_processes: int | None = None
    """Worker processes for the simulated clusters; None decides by fleet size
    (`simulator.fleet.sim_processes_for`)."""
    nats_urls: tuple[str, ...] = ()
    """An external NATS cluster to run on instead of the embedded nats-server (all its nodes)."""
    replicas: int = 1
    """Replicas of every hub stream: 3 on a 3-node cluster survives the loss of one node."""
    leaf_host: str = "0.0.0.0"
    leaf_ws_port: int | None = None
    """Also accept leaf nodes over WebSocket (wss://) here, for edges behind HTTP proxies."""
    public_host: str | None = None
    """The name edges dial; in the hub's certificate and the bundles' hub URLs."""
    nats_memory_limit: str = ""
    """A soft memory limit for the embedded nats-server (`GOMEMLIMIT` syntax); empty: none."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """The API's own certificate and key (PEM): serve HTTPS only."""
    tls_issue: bool = False
    """Serve HTTPS with a certificate from the hub CA (its fingerprint is printed)."""
    source_hosts: tuple[str, ...] = ()
    """Hosts (`host` or `host:port`) the hub may fetch sources from; none: no remote sources."""
    source_timeout_s: float = 120.0
    oidc: OidcConfig | None = None
    """Single sign-on: bearer JWTs of this OIDC issuer are accepted beside fleetbus tokens."""
    standby: bool = False
    """On a NATS cluster: wait for the hub lease as long as it takes (a hot standby), not one
    TTL; nothing that runs once per hub starts, and the API is not served, until it is held."""
    lease_ttl_s: int = HUB_LEASE_TTL_S
    """How long the hub lease (and the scheduler lease of the hub's scheduler) outlives its
    holder's last renewal: the longest a standby waits after the holder dies."""


def hub_config_text(
    data: DataDir,
    *,
    host: str,
    port: int,
    monitor_port: int,
    leaf_block: str = "",
) -> str:
    """The hub's nats-server config (operator mode: it never changes with the clusters)."""
    data.resolver_dir.mkdir(parents=True, exist_ok=True)
    return render_template(
        "hub.conf.tmpl",
        server_name="fleetbus-hub",
        host=host,
        port=port,
        monitor_port=monitor_port,
        store_dir=data.store_dir,
        operator_mode=data.nats_authority().server_config(data.resolver_dir),
        leafnodes=leaf_block,
    )


def start_hub_nats(
    data: DataDir,
    *,
    host: str,
    port: int,
    leaf_block: str = "",
    memory_limit: str = "",
) -> NatsServer:
    """Render the hub's nats-server config into the data dir and start the server."""
    data.create()
    migrate_config_accounts(data)
    monitor_port = free_port()
    config = hub_config_text(
        data,
        host=host,
        port=port,
        monitor_port=monitor_port,
        leaf_block=leaf_block,
    )
    write_private(data.nats_conf, config.encode())
    server = NatsServer(
        config_path=data.nats_conf,
        client_url=f"nats://{host}:{port}",
        monitor_port=monitor_port,
        log_path=data.nats_log,
        memory_limit=memory_limit,
    )
    server.start()
    return server


def migrate_config_accounts(data: DataDir) -> bool:
    """Carry a data dir from before operator mode over; whether there was anything to carry.

    Such a hub's nats-server had its accounts and users in its config file, and JetStream kept
    the FLEET account's streams (the whole log) under `jetstream/FLEET`. In operator mode the
    account is known by its public key, and so is its directory: the streams move there, once,
    before the server starts. The config itself is simply rendered anew. Edges enrolled before
    have no NATS credentials in their bundle and must be enrolled again."""
    jetstream = data.store_dir / "jetstream"
    old = jetstream / FLEET_ACCOUNT
    if not old.is_dir():
        return False
    new = jetstream / data.nats_authority().public_key(FLEET_ACCOUNT)
    if new.exists():
        raise ServerFailed(
            f"{jetstream} holds the FLEET account's streams twice ({old.name}/ and {new.name}/): "
            f"keep the one with the log and move the other away before starting the hub"
        )
    old.rename(new)
    log.warning(
        "moved the hub's streams to operator mode (%s -> %s); edges registered before this "
        "version must be enrolled again (`fleetbus cluster rm NAME`, then "
        "`fleetbus cluster register NAME --out DIR`)",
        old,
        new,
    )
    return True


async def connect_hub_store(data: DataDir, url: str | list[str]) -> EventStore:
    """Connect as the hub's own user (FLEET account)."""
    nc = await connect(url, name="fleetbus-hub", credentials=data.hub_credentials)
    return EventStore(nc, sealer=EventSealer(data.keyring()))


async def keep_nats_running(server: NatsServer) -> None:
    """Start the hub's nats-server again whenever it dies (a crash, the OOM killer, kill -9).

    It comes back with the same config, store and ports: clients and leaf nodes reconnect by
    themselves, and JetStream still holds every acknowledged event. A start that fails raises
    `ServerFailed`, and the supervisor tries again after its backoff.
    """
    while True:
        process = server.process
        if process is not None:
            code = await asyncio.to_thread(process.wait)
            log.warning("the hub's nats-server exited (code %s); starting it again", code)
        await asyncio.to_thread(server.start)


def handle_stop_signals(stack: contextlib.AsyncExitStack) -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, for as long as `stack` is open."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
        stack.callback(loop.remove_signal_handler, sig)
    return stop


async def until_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Whether `work` finished (its error raised here) before `stop` was set; if not, it is
    cancelled."""
    working = asyncio.ensure_future(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({working, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait([stopped, *([] if working.done() else [working])])
    if working.cancelled():
        return False
    working.result()
    return True


async def stop_http(http: _EmbeddedHttpServer, serving: asyncio.Task[None]) -> None:
    http.should_exit = True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(serving, timeout=5)


class ServesApi(Protocol):
    """What a hub process's options say about its API's listener."""

    @property
    def http_host(self) -> str: ...
    @property
    def http_port(self) -> int: ...
    @property
    def public_host(self) -> str | None: ...
    @property
    def tls_cert(self) -> Path | None: ...
    @property
    def tls_key(self) -> Path | None: ...
    @property
    def tls_issue(self) -> bool: ...


@dataclass(frozen=True)
class ApiServing:
    """The API's HTTP server, started: the TLS it serves with, its URL and its task."""

    tls: ApiTls | None
    url: str
    task: asyncio.Task[None]


def serve_api(
    stack: contextlib.AsyncExitStack, context: HubContext, options: ServesApi, pki: HubPki
) -> ApiServing:
    """Start the API's HTTP server (with TLS when asked) and enter its stop into `stack`."""
    tls = api_tls(
        cert=options.tls_cert,
        key=options.tls_key,
        issue=options.tls_issue,
        pki=pki,
        hosts=server_hosts(options.public_host),
        now=datetime.now(UTC),
    )
    http = _EmbeddedHttpServer(
        uvicorn.Config(
            create_app(context),
            host=options.http_host,
            port=options.http_port,
            log_level="warning",
            lifespan="on",
            ssl_certfile=str(tls.cert_file) if tls else None,
            ssl_keyfile=str(tls.key_file) if tls else None,
        )
    )
    serving = asyncio.create_task(http.serve(), name="http")
    stack.push_async_callback(stop_http, http, serving)
    # Ends the API's event streams first, so the HTTP server can stop at once.
    stack.callback(context.shutdown.set)
    url = f"{'https' if tls else 'http'}://{options.http_host}:{options.http_port}"
    return ApiServing(tls, url, serving)


async def run_hub(options: HubOptions) -> None:
    """Run the hub until SIGINT/SIGTERM; everything started is stopped in reverse order.

    Each part is entered into one `AsyncExitStack`: the data dir's lock, the signal handlers,
    the embedded nats-server, the one `Supervisor` of every long-running service (nats-server
    watchdog, cluster access, provisioning, anti-entropy, source revival, scheduler,
    projector), the event store connection, the simulated fleet and the HTTP server. On a NATS
    cluster everything after the store waits for the hub lease (`fleetbus.hub_lease`): a
    standby (`options.standby`) waits for it as long as it takes, changing no stream meanwhile.
    """
    data = DataDir(options.data_dir)
    data.create()
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(data.lock())
        stack.callback(data.hub_json.unlink, missing_ok=True)
        if not options.nats_urls:
            # A nats-server left running by a hub that was killed gives its ports back first.
            claim_server(data.nats_conf)
            check_port_free(options.nats_host, options.nats_port, "--nats-port")
        check_port_free(options.http_host, options.http_port, "--http")
        listener: LeafListener | None = None
        server: NatsServer | None = None
        if not options.nats_urls:
            check_port_free(options.leaf_host, options.leaf_port, "--leaf-port")
            if options.leaf_ws_port is not None:
                check_port_free(options.leaf_host, options.leaf_ws_port, "--leaf-ws-port")
            listener = prepare_listener(
                data,
                host=options.leaf_host,
                port=options.leaf_port,
                ws_port=options.leaf_ws_port,
                public_host=options.public_host,
                now=datetime.now(UTC),
            )
            server = start_hub_nats(
                data,
                host=options.nats_host,
                port=options.nats_port,
                leaf_block=listener.render(),
                memory_limit=options.nats_memory_limit,
            )
            stack.callback(server.stop)
        nats_urls = list(options.nats_urls) if server is None else [server.client_url]
        stop = handle_stop_signals(stack)
        supervisor = Supervisor()
        stack.push_async_callback(supervisor.stop)
        if server is not None:
            supervisor.start("nats watchdog", partial(keep_nats_running, server))
        store = await connect_hub_store(data, nats_urls)
        stack.push_async_callback(store.close)
        # The services stop (the scheduler and projector finishing their batch) while the store
        # is still open; the earlier callback only matters if connecting failed.
        stack.push_async_callback(supervisor.stop)
        retention = options.events_retention
        # LEASES too: a scheduler's lease must outlive the node it was written on.
        streams = [
            *hub_streams(options.replicas, retention=retention is not None),
            leases_stream(options.replicas),
        ]
        if not options.standby:
            await store.ensure_streams(streams)
        lease: HubLease | None = None
        hub_secrets = HubSecrets(store, data.keyring())
        if options.nats_urls:
            # On a NATS cluster the data dir's lock cannot keep a second hub process away.
            lease = HubLease(
                store, hub_holder(str(options.data_dir.resolve())), ttl_s=options.lease_ttl_s
            )
            if options.standby:
                # Waiting, it changes no stream (other --replicas or --events-retain than the
                # active hub's would reconfigure its streams): only LEASES, if missing.
                if not await lease.stream_exists():
                    await store.ensure_streams([leases_stream(options.replicas)])
                log.info(
                    "fleetbus hub standby (%s): waiting for the hub lease (Ctrl-C to stop)",
                    lease.holder,
                )
            # Ctrl-C while a standby waits: stop now.
            if not await until_stopped(lease.acquire(standby=options.standby), stop):
                return
            stack.push_async_callback(lease.release)
            keeper = asyncio.create_task(lease.keep(stop), name="hub lease")
            stack.push_async_callback(cancel_and_wait, [keeper])
            if options.standby:
                await store.ensure_streams(streams)
            # What API processes sign with, sealed, for those started without a copy.
            await hub_secrets.ensure_stream(options.replicas)
            # A hub process on another host, whose data dir has only the NATS logins and the
            # keyring, takes the rest from there before anything signs with it.
            await hub_secrets.restore(data.root)
            await hub_secrets.publish(data.root)
        if retention is not None and retention.enabled:
            archiver = EventsArchiver(
                store,
                retention,
                every_s=options.events_archive_every_s,
                replicas=options.replicas,
            )
            await archiver.check()
            supervisor.start(
                "events archiver", lambda: archiver.run(supervisor.stop_event), watches_stop=True
            )
        hub_leaf_urls: dict[str, list[str]]
        if listener is not None:
            hub_leaf_urls = leaf_urls(listener, options.public_host)
        else:
            publisher = AccountPublisher(nats_urls, data.system_credentials)
            hub_leaf_urls = {"leaf_urls": await cluster_leaf_urls(publisher, options.public_host)}
        edge_services = EdgeServices(
            store=store,
            urls=nats_urls,
            data=data,
            leaf_urls=hub_leaf_urls["leaf_urls"],
            replicas=options.replicas,
            sim_leaf_url=f"tls://127.0.0.1:{listener.port}" if listener is not None else None,
            supervisor=supervisor,
        )
        stack.push_async_callback(edge_services.stop_sims)
        starting = edge_services.start(
            sim_clusters=options.sim_clusters, sim_processes=options.sim_processes
        )
        # Ctrl-C while a large simulated fleet starts: stop now, not once it is up.
        if not await until_stopped(starting, stop):
            return
        projector = start_hub_services(
            store,
            data,
            supervisor,
            scheduler=options.scheduler,
            # Per process on a NATS cluster: a hub process that lost the hub lease can never
            # take its successor's scheduler lease as its own.
            scheduler_holder="hub-scheduler" if lease is None else f"hub-scheduler {lease.holder}",
            scheduler_lease_ttl_s=options.lease_ttl_s,
            snapshot_every=options.snapshot_every,
            snapshot_keep=options.snapshot_keep,
        )
        tokens = await SharedTokenTable.open(store, replicas=options.replicas)
        await migrate_token_file(options.data_dir / TOKENS_FILE, tokens)
        api_context = HubContext.for_store(store, options.data_dir, tokens=TokenStore(tokens))
        if options.nats_urls:
            # A stream ticket from this process opens the event stream on any API process.
            api_context.tickets = StreamTickets(key=await hub_secrets.ticket_key())
        api_context.read_generation = lambda: projector.generation
        if options.oidc is not None:
            api_context.sso = OidcVerifier(options.oidc)
        api_context.notifications = start_notifications(store, data, supervisor)
        await api_context.tokens.ensure_admin_token(
            options.data_dir / ADMIN_TOKEN_FILE, now=datetime.now(UTC)
        )
        api_context.source_policy = FetchPolicy(
            allowed=HostAllowList.parse(options.source_hosts),
            limits=SourceLimits(timeout_s=options.source_timeout_s),
        )
        api_context.sources = start_source_service(
            store,
            api_context.charts,
            data,
            supervisor,
            api_context.source_policy,
            admit=functools.partial(admit_publish, api_context),
        )
        api_context.renderer = ChartArchiveRenderer(api_context.charts)
        api_context.history = LogStateHistory(
            store, api_context.renderer, snapshot_keep=options.snapshot_keep
        )
        api_context.snapshots = api_context.history
        connect_api_to_edges(api_context, edge_services)
        api = serve_api(stack, api_context, options, hub_pki(data))
        tls, serving = api.tls, api.task
        info: dict[str, Any] = {
            "nats_url": nats_urls[0],
            "nats_urls": nats_urls,
            "http_url": api.url,
            "data_dir": str(options.data_dir.resolve()),
        }
        if tls is not None:
            info["api_tls_fingerprint"] = tls.fingerprint
            if tls.ca_file is not None:
                info["api_ca_file"] = str(tls.ca_file.resolve())
        info.update(hub_leaf_urls)
        if lease is not None:
            info["hub_lease_holder"] = lease.holder
            if lease.acquired_at is not None:
                info["hub_lease_since"] = lease.acquired_at.isoformat(timespec="seconds")
            if lease.took_over_from:
                info["took_over_from"] = lease.took_over_from
        data.write_hub_info(info)
        log.info(
            "fleetbus hub up: api %s  nats %s  data %s  (Ctrl-C to stop)",
            info["http_url"],
            info["nats_url"],
            info["data_dir"],
        )
        if tls is not None:
            log.info("fleetbus hub API TLS certificate %s", tls.fingerprint)
        stopped = asyncio.create_task(stop.wait())
        stack.push_async_callback(cancel_and_wait, [stopped])
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done() and not stop.is_set():
            exc = serving.exception()
            raise ServerFailed(f"HTTP server stopped: {exc or 'could not serve'}")
        if lease is not None and lease.taken_by:
            raise ServerFailed(f"stopped: {lease.taken_by} took the hub lease")
