"""`fleetbus controller`: run the cluster controller against one Kubernetes cluster.

It installs or upgrades its CRDs first (server-side apply, then waits for them to be
Established), optionally waits to lead through a Lease, and reconciles until SIGINT/SIGTERM.
All along it renews a heartbeat Lease with its health (`cluster_controller.heartbeat`), which
the connector reads and passes on to the hub.
It loads nothing of the hub: an edge install runs it with the base dependencies only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cluster_controller.crds import install_crds
from cluster_controller.health import ControllerHealth
from cluster_controller.heartbeat import Heartbeat
from cluster_controller.kube import Kube
from cluster_controller.leader import LeaderElection
from cluster_controller.runtime import Controller, ControllerOptions
from fleetbus.jsonlog import add_log_format_option, configure_logging
from fleetbus.options import positive_seconds, whole_number
from fleetbus.probes import (
    DEFAULT_CONTROLLER_HEALTH,
    MetricsText,
    Probe,
    ProbeServer,
    add_health_option,
    fleetbus_version,
    prometheus_text,
)

log = logging.getLogger("fleetbus.controller")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "controller", help="run the cluster controller (Task, Tasklet, Step, Namespace CRDs)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        metavar="F",
        help="kubeconfig to use (default: the in-cluster ServiceAccount, else $KUBECONFIG, "
        "else ~/.kube/config)",
    )
    parser.add_argument("--context", default=None, help="kubeconfig context to use")
    parser.add_argument(
        "--namespace",
        default="",
        metavar="NS",
        help="reconcile Tasks and Steps in this namespace only (default: every namespace)",
    )
    parser.add_argument(
        "--workers",
        type=whole_number(1, 256),
        default=4,
        metavar="N",
        help="reconciles run at once (default 4)",
    )
    parser.add_argument(
        "--resync",
        type=positive_seconds,
        default=600.0,
        metavar="SECONDS",
        help="full drift re-check interval in seconds (default 600)",
    )
    parser.add_argument(
        "--skip-crds",
        action="store_true",
        help="do not install or upgrade the CRDs (when something else manages them)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="lead through a Lease before reconciling (run more than one replica safely)",
    )
    parser.add_argument(
        "--lease-namespace",
        default="fleetbus-system",
        metavar="NS",
        help="namespace of the leader-election Lease and of the heartbeat Lease through which "
        "the connector tells the hub the controller's health (the connector's namespace)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how often the heartbeat Lease is renewed (default 10; it expires after three "
        "intervals, and the hub then shows the controller as not reporting); a change of "
        "readiness is written at once",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING"),
        help="the least severe records logged (default INFO)",
    )
    add_health_option(parser, DEFAULT_CONTROLLER_HEALTH)
    add_log_format_option(parser)
    parser.set_defaults(handler=handle)


def utc_now() -> datetime:
    return datetime.now(UTC)


async def handle(args: argparse.Namespace) -> int:
    configure_logging(args.log_format, getattr(logging, args.log_level))
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    kube = Kube.connect(args.kubeconfig, context=args.context, user_agent="fleetbus-controller")
    try:
        if not args.skip_crds:
            names = await install_crds(kube)
            log.info("fleetbus controller: CRDs established: %s", ", ".join(names))
        await run_until_signalled(kube, args)
    finally:
        await kube.close()
    return 0


async def run_until_signalled(kube: Kube, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    identity = f"{socket.gethostname()}-{id(kube):x}"
    instance = f"{socket.gethostname()}-{os.getpid()}"
    controller = Controller(
        kube,
        ControllerOptions(
            namespace=args.namespace,
            workers=args.workers,
            resync_seconds=args.resync,
            instance=identity,
        ),
        clock=utc_now,
    )
    health = ControllerHealth(controller, fleetbus_version())
    probes = (
        ProbeServer(
            host=args.health_addr[0],
            port=args.health_addr[1],
            live=_answer(health.live),
            ready=_answer(health.readiness),
            metrics=_metrics(health),
        )
        if getattr(args, "health_addr", None) is not None
        else None
    )
    election = (
        LeaderElection(kube, namespace=args.lease_namespace, identity=identity, clock=utc_now)
        if args.leader_elect
        else None
    )
    heartbeat = Heartbeat(
        kube,
        health,
        namespace=args.lease_namespace,
        instance=instance,
        elected=args.leader_elect,
        clock=utc_now,
        interval_s=args.heartbeat_interval,
    )
    tasks: list[asyncio.Task[None]] = []
    stop_reason = "asked to stop"
    try:
        if probes is not None:
            await probes.start()
        tasks.append(asyncio.create_task(heartbeat.run(), name="heartbeat"))
        if election is not None:
            health.standby = True
            acquiring = asyncio.create_task(election.acquire())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not acquiring.done():
                acquiring.cancel()
                return
            acquiring.result()
            tasks.append(asyncio.create_task(election.keep(), name="lease"))
            health.standby = False
        ready = health.ready
        health.started.set()
        tasks.append(asyncio.create_task(controller.run(ready), name="controller"))
        tasks.append(asyncio.create_task(_announce(ready), name="announce"))
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for task in done:
            if task is not stopping:
                try:
                    task.result()
                except Exception as e:
                    stop_reason = str(e) or type(e).__name__
                    raise
    finally:
        health.stopped = "stopping"
        if probes is not None:
            await probes.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await heartbeat.stopped(stop_reason)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _answer(check: Callable[[], tuple[bool, str]]) -> Probe:
    async def answer() -> tuple[bool, str]:
        return check()

    return answer


def _metrics(health: ControllerHealth) -> MetricsText:
    async def text() -> str:
        return prometheus_text(health.samples())

    return text


async def _announce(ready: asyncio.Event) -> None:
    await ready.wait()
    log.info("fleetbus controller: reconciling (Ctrl-C to stop)")
    await asyncio.Event().wait()
