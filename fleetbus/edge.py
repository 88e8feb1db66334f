"""`fleetbus edge`: one cluster's edge — its leaf nats-server as a child process, the connector,
and with a kubeconfig the cluster controller in the same process (`fleetbus.edge_controller`).

The leaf runs in the cluster's own JetStream domain (`edge-<cluster>`) and dials the hub with
the cluster's certificate; it listens on loopback only (clients and monitoring). On it the
connector keeps two streams: the outbox `REPORTS-<cluster>` (the hub sources it) and the
filtered mirror `DESIRED-<cluster>` of the cluster's desired state (read even while the hub is
away). Clusters of large simulated fleets skip the leaf and connect to the hub as plain clients
(`EdgeRuntime.client`), pulling their durable consumer and publishing their reports straight
into the hub's REPORTS stream.

This module is the edge's entry point (`python -m fleetbus.edge`, `fleetbus edge`): it imports
neither the Helm engine nor any hub component, so an edge install stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from nats.aio.client import Client as NatsClient

from access.private_files import write_private
from edge_connector.connector import OUTBOX_DRAIN_S, Connector, ConnectorSettings, DesiredFeed
from edge_connector.executor import Executor
from edge_connector.health import HubLinkState, connector_metrics
from edge_connector.jetstream import (
    ClientHubLink,
    DurableFeed,
    InventoryPublisher,
    LeafHubLink,
    MirrorFeed,
    OutboxSink,
    connect_hub_as_client,
    connect_local,
    mirror_config,
    outbox_config,
)
from events import edges
from events.store import EventStore
from events.streams import REPORTS_STREAM
from events.tasks import cancel_and_wait
from fleetbus.bundle import (
    LEAF_MAX_FILE_STORE,
    EdgeBundle,
    EdgeSettings,
    leaf_config,
    read_edge_bundle,
)
from fleetbus.edge_process import distribution_versions_without_metadata
from fleetbus.errors import ConflictingOptions
from fleetbus.jsonlog import add_log_format_option, configure_logging
from fleetbus.natsserver import NatsServer, free_port
from fleetbus.options import leaf_file_store, leaf_memory_limit, positive_seconds, whole_number
from fleetbus.probes import (
    DEFAULT_CONNECTOR_HEALTH,
    ProbeServer,
    add_health_option,
    fleetbus_version,
    prometheus_text,
)
from taskset.errors import FleetbusError

if TYPE_CHECKING:
    from fleetbus.edge_controller import ControllerComponent

log = logging.getLogger("fleetbus.edge")  # also when run as `python -m fleetbus.edge`

DEFAULT_STATE_DIR = Path(".fleetbus-edge")
CLIENT_READINESS_CHECK_S = 5.0
"""How often a cluster connected as a plain client (a simulated fleet's, thousands per
process) checks its readiness for a change to tell the hub at once; a leaf edge checks every
second."""
CONNECTOR_USER = "connector"


@dataclass(frozen=True)
class EdgeState:
    """The edge's own files: JetStream store, rendered config, log, local password."""

    root: Path

    @property
    def store_dir(self) -> Path:
        return self.root / "nats"

    @property
    def nats_conf(self) -> Path:
        return self.root / "leaf.conf"

    @property
    def nats_log(self) -> Path:
        return self.root / "nats.log"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.store_dir.mkdir(exist_ok=True)

    def connector_password(self) -> str:
        path = self.root / "secrets.json"
        if path.exists():
            return str(orjson.loads(path.read_bytes())["connector_password"])
        password = secrets.token_urlsafe(24)
        write_private(path, orjson.dumps({"connector_password": password}))
        return password


@dataclass(frozen=True)
class ControllerSettings:
    """The options of the cluster controller when it runs inside `fleetbus edge`."""

    workers: int = 4
    resync_seconds: float = 600.0
    manage_crds: bool = True
    heartbeat_seconds: float = 10.0
    """How often its heartbeat Lease (read by the connector, told to the hub) is renewed."""


@dataclass(frozen=True)
class LeafLimits:
    """How big the leaf nats-server may grow: an edge leaves its cluster's resources to the
    cluster's own applications."""

    memory_limit: str = "32MiB"
    """Go's soft memory limit (`GOMEMLIMIT`) for the leaf; "" for none. It idles at ~20 MiB,
    of which about 15 MiB are the nats-server program's own code pages: no limit lowers that."""
    max_file_store: int = LEAF_MAX_FILE_STORE
    """JetStream file storage (outbox and desired-state mirror), bytes."""
    procs: int = 1
    """Threads running the leaf's Go code at once (`GOMAXPROCS`): one carries an edge's
    traffic and keeps the leaf about 0.7 MiB smaller than one per core."""


def start_leaf(
    bundle: EdgeBundle, state: EdgeState, limits: LeafLimits | None = None
) -> NatsServer:
    """Render the leaf config from the bundle and start the leaf nats-server (blocking)."""
    limits = limits or LeafLimits()
    state.create()
    port, monitor_port = free_port(), free_port()
    text = leaf_config(
        bundle.settings,
        port=port,
        monitor_port=monitor_port,
        store_dir=state.store_dir.resolve(),
        connector_password=state.connector_password(),
        ca_file=bundle.ca_file.resolve(),
        cert_file=bundle.cert_file.resolve(),
        key_file=bundle.key_file.resolve(),
        creds_file=bundle.creds_file.resolve(),
        max_file_store=limits.max_file_store,
    )
    write_private(state.nats_conf, text.encode())
    server = NatsServer(
        config_path=state.nats_conf,
        client_url=f"nats://127.0.0.1:{port}",
        monitor_port=monitor_port,
        log_path=state.nats_log,
        memory_limit=limits.memory_limit,
        max_procs=limits.procs,
    )
    server.start()
    return server


def load_executor(kubeconfig: Path | None, cluster: str, context: str | None = None) -> Executor:
    """The simulator, or the Kubernetes executor when a kubeconfig is given."""
    # Imported only here: a simulated edge never loads the Kubernetes client, a Kubernetes
    # edge never loads the simulator.
    if kubeconfig is None:
        from simulator.executor import SimExecutor

        return SimExecutor(name=cluster)
    with distribution_versions_without_metadata():
        from edge_connector.kube_executor import KubernetesExecutor

    return KubernetesExecutor.from_kubeconfig(kubeconfig, cluster=cluster, context=context)


@dataclass
class EdgeRuntime:
    """A running edge: optional leaf nats-server, the connection, the connector task."""

    settings: EdgeSettings
    executor: Executor
    nc: NatsClient
    connector: Connector
    server: NatsServer | None = None
    controller: ControllerComponent | None = None
    """The cluster controller, when it runs in this process (`attach_controller`)."""
    hub_link: LeafHubLink | None = None
    """The leaf's link to the hub, as readiness reads it (leaf edges only)."""
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _controller_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _controller_stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def cluster(self) -> str:
        return self.settings.cluster

    @classmethod
    async def leaf(
        cls,
        bundle: EdgeBundle,
        state: EdgeState,
        executor: Executor,
        *,
        inventory_interval: float | None = None,
        limits: LeafLimits | None = None,
    ) -> EdgeRuntime:
        """Start the leaf nats-server and the connector on it."""
        server = await asyncio.to_thread(start_leaf, bundle, state, limits)
        try:
            nc = await connect_local(
                server.client_url,
                cluster=bundle.cluster,
                user=CONNECTOR_USER,
                password=state.connector_password(),
            )
        except FleetbusError:
            server.stop()
            raise
        try:
            local = EventStore(nc, stream=edges.outbox_stream(bundle.cluster))
            await local.ensure_stream(outbox_config(bundle.cluster))
            await local.ensure_stream(mirror_config(bundle.cluster))
            feed: DesiredFeed
            if bundle.settings.desired_source == "durable":
                feed = DurableFeed(nc, bundle.cluster, hub_domain=bundle.settings.hub_domain)
            else:
                feed = MirrorFeed(nc, bundle.cluster)
            runtime = cls._assemble(
                bundle.settings, executor, nc, local, feed, inventory_interval, server
            )
            connector = runtime.connector
            runtime.hub_link = LeafHubLink(
                nc,
                bundle.cluster,
                monitor_port=server.monitor_port,
                mirror_positions=bundle.settings.desired_source != "durable",
                progress=lambda: (connector.delivered_seq, connector.feed_pending),
            )
            connector.hub_link = runtime.hub_link
        except BaseException:
            await nc.close()
            server.stop()
            raise
        runtime.start()
        return runtime

    @classmethod
    async def client(
        cls,
        settings: EdgeSettings,
        hub_urls: Sequence[str],
        credentials: str,
        executor: Executor,
        *,
        inventory_interval: float | None = None,
    ) -> EdgeRuntime:
        """A cluster connected to the hub as a plain client (large simulated fleets), with its
        user's `.creds` text: to the first of `hub_urls` while it answers, then the next."""
        nc = await connect_hub_as_client(
            hub_urls, cluster=settings.cluster, credentials=credentials
        )
        # No outbox: its reports go straight into the hub's REPORTS (on its own subjects only).
        reports = EventStore(nc, stream=REPORTS_STREAM)
        feed = DurableFeed(nc, settings.cluster, hub_domain=settings.hub_domain)
        runtime = cls._assemble(
            settings,
            executor,
            nc,
            reports,
            feed,
            inventory_interval,
            None,
            readiness_check_interval=CLIENT_READINESS_CHECK_S,
        )
        runtime.connector.hub_link = ClientHubLink(nc)
        runtime.start()
        return runtime

    @classmethod
    def _assemble(
        cls,
        settings: EdgeSettings,
        executor: Executor,
        nc: NatsClient,
        outbox: EventStore,
        feed: DesiredFeed,
        inventory_interval: float | None,
        server: NatsServer | None,
        *,
        readiness_check_interval: float = ConnectorSettings.readiness_check_interval,
    ) -> EdgeRuntime:
        connector = Connector(
            settings=ConnectorSettings(
                cluster=settings.cluster,
                inventory_interval=inventory_interval or settings.inventory_interval,
                readiness_check_interval=readiness_check_interval,
            ),
            feed=feed,
            executor=executor,
            reports=OutboxSink(outbox),
            inventory_sink=InventoryPublisher(nc, settings.cluster),
            version=fleetbus_version(),
        )
        return cls(settings=settings, executor=executor, nc=nc, connector=connector, server=server)

    def start(self) -> None:
        self._task = asyncio.create_task(self.connector.run(), name=f"edge-{self.cluster}")

    def attach_controller(self, component: ControllerComponent) -> None:
        """Run the cluster controller in this process, supervised apart from the connector:
        its health joins the connector's readiness (and so the hub's view of this edge)."""
        self.controller = component
        component.on_change = self.connector.send_inventory_now
        self.connector.companions.append(component)
        self._controller_task = asyncio.create_task(
            component.run(self._controller_stop), name=f"controller-{self.cluster}"
        )

    async def live(self) -> tuple[bool, str]:
        """Live while the connector runs and its leaf nats-server (if any) does, and the
        controller's supervisor (if any): a controller waiting to start again is alive."""
        if self._task is None or self._task.done():
            return False, "the connector is not running"
        if self.server is not None and not self.server.running():
            return False, "the leaf nats-server has exited"
        if self._controller_task is not None and self._controller_task.done():
            return False, "the controller's supervisor has stopped"
        if self.controller is not None:
            return True, "the connector, the controller and the leaf are running"
        return True, "the connector and its leaf are running"

    async def ready(self) -> tuple[bool, str]:
        live, reason = await self.live()
        if not live:
            return False, reason
        ready, reason, _ = await self.connector.readiness()
        return ready, reason

    async def metrics(self) -> str:
        ready, _, link = await self.connector.readiness()
        link = link or HubLinkState(connected=False, detail="unknown")
        samples = connector_metrics(
            self.cluster,
            self.connector.version,
            link,
            self.connector.progress(),
            ready,
            self.connector.controller,
        )
        if self.controller is not None:
            samples += self.controller.samples()
        return prometheus_text(samples)

    def probe_server(self, host: str, port: int) -> ProbeServer:
        return ProbeServer(host, port, live=self.live, ready=self.ready, metrics=self.metrics)

    async def wait(self) -> None:
        """Return when the connector stops (it only does on an unexpected error)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._controller_task is not None:
            self._controller_stop.set()
            await cancel_and_wait([self._controller_task])
            self._controller_task = None
        if self._task is not None:
            # The connector stores its queued reports before it ends: give it that long.
            await cancel_and_wait([self._task], every_s=OUTBOX_DRAIN_S + 1.0)
            self._task = None
        if self.hub_link is not None:
            await self.hub_link.close()
        await self.nc.close()
        await self.executor.close()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)


async def run_edge(
    bundle_dir: Path,
    state_dir: Path,
    kubeconfig: Path | None,
    stop: asyncio.Event | None = None,
    health_addr: tuple[str, int] | None = DEFAULT_CONNECTOR_HEALTH,
    controller: ControllerSettings | None = None,
    limits: LeafLimits | None = None,
    context: str | None = None,
) -> None:
    """Run one edge until SIGINT/SIGTERM (or `stop`), serving its probes on `health_addr`.

    With a kubeconfig and `controller` settings, the cluster controller runs in the same
    process as a supervised component (`fleetbus.edge_controller`)."""
    bundle = read_edge_bundle(bundle_dir)
    component: ControllerComponent | None = None
    executor: Executor
    if kubeconfig is not None and controller is not None:
        # Imported only here: an edge without the controller never loads it.
        with distribution_versions_without_metadata():
            from fleetbus.edge_controller import executor_with_controller

        logging.getLogger("httpx2").setLevel(logging.WARNING)
        executor, component = executor_with_controller(
            kubeconfig, bundle.cluster, controller, context=context
        )
    else:
        executor = load_executor(kubeconfig, bundle.cluster, context)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runtime = await EdgeRuntime.leaf(bundle, EdgeState(state_dir), executor, limits=limits)
    if component is not None:
        runtime.attach_controller(component)
    probes = runtime.probe_server(*health_addr) if health_addr is not None else None
    try:
        if probes is not None:
            await probes.start()
        layout = "connector and controller" if runtime.controller is not None else "connector"
        log.info(
            "fleetbus edge up: cluster %s  hub %s  leaf %s  executor %s  running %s"
            "  (Ctrl-C to stop)",
            bundle.cluster,
            ", ".join(bundle.settings.hub_urls),
            runtime.server.client_url if runtime.server else "-",
            "kubernetes" if kubeconfig else "simulator",
            layout,
        )
        waiter = asyncio.create_task(stop.wait())
        running = asyncio.create_task(runtime.wait())
        done, _ = await asyncio.wait({waiter, running}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if running in done:
            running.result()
        running.cancel()
    finally:
        if probes is not None:
            await probes.stop()
        await runtime.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("fleetbus edge stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_log_format_option(parser)
    parser.add_argument(
        "--bundle",
        type=Path,
        required=True,
        metavar="DIR",
        help="bundle written by `fleetbus cluster register NAME --out DIR`",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="F",
        help="apply to the Kubernetes cluster of this kubeconfig",
    )
    target.add_argument(
        "--sim", action="store_true", help="apply to an in-memory simulated cluster"
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="the kubeconfig's context to use (default: its current-context)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="D",
        help="the leaf's JetStream store and config (default ./.fleetbus-edge)",
    )
    add_health_option(parser, DEFAULT_CONNECTOR_HEALTH)
    defaults = LeafLimits()
    parser.add_argument(
        "--leaf-memory-limit",
        type=leaf_memory_limit,
        default=defaults.memory_limit,
        metavar="SIZE",
        help=f"soft memory limit of the leaf nats-server (Go's GOMEMLIMIT; default "
        f"{defaults.memory_limit}, at least 16MiB; `off` for none)",
    )
    parser.add_argument(
        "--leaf-max-file-store",
        type=leaf_file_store,
        default=defaults.max_file_store,
        metavar="SIZE",
        help="the leaf's JetStream file storage for the outbox and the desired-state mirror "
        f"(default {defaults.max_file_store >> 20}MiB; keep it below the volume's size)",
    )
    parser.add_argument(
        "--leaf-procs",
        type=whole_number(1, 64),
        default=defaults.procs,
        metavar="N",
        help=f"threads running the leaf nats-server's Go code at once (Go's GOMAXPROCS; "
        f"default {defaults.procs})",
    )
    controller = parser.add_argument_group(
        "the cluster controller (with --kubeconfig it runs in this process by default)"
    )
    controller.add_argument(
        "--without-controller",
        action="store_true",
        help="run the connector only: the cluster controller runs as `fleetbus controller` "
        "elsewhere (the edge chart's split layout)",
    )
    controller.add_argument(
        "--controller-workers",
        type=whole_number(1, 256),
        default=None,
        metavar="N",
        help="reconciles the controller runs at once (default 4)",
    )
    controller.add_argument(
        "--resync",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="the controller's full drift re-check interval (default 600)",
    )
    controller.add_argument(
        "--skip-crds",
        action="store_true",
        help="the controller does not install or upgrade the CRDs (something else manages them)",
    )


def leaf_limits(args: argparse.Namespace) -> LeafLimits:
    return LeafLimits(
        memory_limit=args.leaf_memory_limit,
        max_file_store=args.leaf_max_file_store,
        procs=args.leaf_procs,
    )


def controller_settings(args: argparse.Namespace) -> ControllerSettings | None:
    """The in-process controller's settings from `fleetbus edge`'s options; None without it."""
    tuning = {
        "--controller-workers": args.controller_workers is not None,
        "--resync": args.resync is not None,
        "--skip-crds": args.skip_crds,
    }
    given = [flag for flag, set_ in tuning.items() if set_]
    if args.kubeconfig is None and getattr(args, "context", None):
        raise ConflictingOptions("--context names a context of --kubeconfig: not with --sim")
    if args.kubeconfig is None and (given or args.without_controller):
        flags = ", ".join([*given, *(["--without-controller"] if args.without_controller else [])])
        raise ConflictingOptions(
            f"{flags}: the cluster controller runs only with --kubeconfig, not with --sim"
        )
    if args.without_controller:
        if given:
            raise ConflictingOptions(
                f"{', '.join(given)} configure the in-process controller, which "
                "--without-controller leaves out (give them to `fleetbus controller`)"
            )
        return None
    if args.kubeconfig is None:
        return None
    defaults = ControllerSettings()
    return ControllerSettings(
        workers=args.controller_workers or defaults.workers,
        resync_seconds=args.resync or defaults.resync_seconds,
        manage_crds=not args.skip_crds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fleetbus.edge`: the edge alone, without the hub's command set."""
    parser = argparse.ArgumentParser(prog="fleetbus-edge", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_format)
    try:
        controller = controller_settings(args)
        asyncio.run(
            run_edge(
                args.bundle,
                args.state_dir,
                args.kubeconfig,
                health_addr=args.health_addr,
                controller=controller,
                limits=leaf_limits(args),
                context=args.context,
            )
        )
    except FleetbusError as e:
        print(f"fleetbus edge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    from fleetbus.edge_process import keep_out_unused_modules

    keep_out_unused_modules()
    sys.exit(main())
