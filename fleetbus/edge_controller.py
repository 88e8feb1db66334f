"""The cluster controller as a component of the edge process.

`fleetbus edge --kubeconfig` runs the connector and the cluster controller in one process: one
interpreter, one asyncio loop and one HTTP client (connection pool, credentials, TLS) to the
apiserver instead of two of each. They stay two components: the controller is imported from
its own package and composed here, and its failures are handled apart from the connector's.

A controller that fails (an apiserver answer it cannot take, such as a watch refused because
its CRD was deleted, or a bug) never takes the connector with it and is never swallowed:

* the failure is logged with its reason (a bug with its traceback, see `fleetbus.supervision`);
* the connector learns of it at once through its companion port: the edge turns not ready,
  naming the controller's failure, and sends an inventory digest right away, so the hub shows
  `edge_ready: false` with that reason in `edge_health` (and `/readyz` answers 503 with it);
* it is started again after the supervisor's backoff (0.5 s doubling up to 10 s), installing
  its CRDs again first; once its watches are synced the edge is ready again and the hub told.

The connector judges the controller's health from the controller itself (`heartbeats`), not
by listing its heartbeat Lease each second; the Lease is still renewed, for whoever reads it.

Its first start is told the same way: once its watches are synced the connector sends a digest
at once, so the hub does not show a starting edge for an inventory interval after it is ready.

The connector and the controller share one watch and one cache of the Tasks: the component
owns the Task informer, which outlives the controller's restarts. It runs with each controller
(a failure of it is the controller's failure, and is restarted with it); its cache stays while
the controller is down, so the connector still reads the Tasks it wrote (their status changes
only through the controller anyway), and the next start lists them again, telling both
components what changed meanwhile. The cache holds each Task once, as compact JSON without its
managedFields. The connector keeps its own watch of the Steps (for the drift it reports), which
holds no copy of them: a controller restart never blinds it, and what it holds is still
applied once the controller is back.

`fleetbus edge --without-controller` leaves the controller out, for the split layout where
`fleetbus controller` runs in a pod of its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cluster_controller.crds import install_crds
from cluster_controller.errors import ControllerError
from cluster_controller.health import ControllerHealth
from cluster_controller.heartbeat import Heartbeat, heartbeat_of
from cluster_controller.informer import Informer
from cluster_controller.kube import Kube
from cluster_controller.runtime import Controller, ControllerOptions
from edge_connector.kube_executor import KubernetesExecutor
from fleetbus.edge import ControllerSettings
from fleetbus.errors import ComponentStopped
from fleetbus.probes import fleetbus_version
from fleetbus.supervision import RESTART_BACKOFF, Backoff, supervise
from kube_contract.controller_status import ControllerHeartbeat, ReplicaHeartbeat
from kube_contract.resources import TASK

log = logging.getLogger(__name__)

COMPONENT = "controller"

Sample = tuple[str, str, str, float, dict[str, str]]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ControllerComponent:
    """The controller, supervised: run it with `run(stop)`; read it with `health()`."""

    kube: Kube
    namespace: str
    settings: ControllerSettings
    version: str
    on_change: Callable[[], None] = lambda: None
    """Called when the component fails and each time it turns ready, at start and after a
    restart (the connector then tells the hub at once)."""
    backoff: Backoff = RESTART_BACKOFF
    clock: Callable[[], datetime] = utc_now
    restarts: int = 0
    """Failures so far, each followed by a start again."""
    last_error: str = ""
    last_error_at: datetime | None = None
    _current: ControllerHealth | None = field(default=None, repr=False)
    _failed_until: float | None = field(default=None, repr=False)
    """While failed: when (monotonic) it starts again."""
    _stopped: bool = field(default=False, repr=False)
    tasks: Informer = field(init=False, repr=False)
    """The Task informer every controller of this component runs, shared with the connector."""
    task_listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)
    """Called on every change of the shared Task cache (the connector's executor waits on
    them), also for the controller's own writes it takes in at once."""
    _running: Controller | None = field(default=None, repr=False)
    _instance: str = field(default_factory=socket.gethostname, repr=False)

    def __post_init__(self) -> None:
        self.tasks = Informer(
            self.kube,
            TASK,
            namespace=self.namespace,
            on_event=self._on_task_event,
            watch_timeout=ControllerOptions().watch_timeout,
            on_change=self._tasks_changed,
        )

    def _on_task_event(self, event_type: str, obj: dict[str, Any]) -> None:
        if self._running is not None:
            self._running.on_task_event(event_type, obj)

    def _tasks_changed(self) -> None:
        for listener in self.task_listeners:
            listener()

    @property
    def name(self) -> str:
        return COMPONENT

    @property
    def controller(self) -> Controller | None:
        """The running controller (a new one after each restart), if any."""
        return self._current.controller if self._current is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        """Run the controller until `stop` is set, starting it again after every failure."""
        try:
            await supervise(
                f"{COMPONENT} component", self._run_once, stop, self.backoff, self._failed
            )
        finally:
            self._stopped = True

    async def _run_once(self) -> None:
        self._current = None
        if self.settings.manage_crds:
            names = await install_crds(self.kube)
            log.info("controller: CRDs established: %s", ", ".join(names))
        controller = Controller(
            self.kube,
            ControllerOptions(
                namespace=self.namespace,
                workers=self.settings.workers,
                resync_seconds=self.settings.resync_seconds,
                instance=self._instance,
            ),
            clock=self.clock,
            tasks=self.tasks,
        )
        self._running = controller
        health = ControllerHealth(controller, self.version)
        health.started.set()
        self._current = health
        # The same heartbeat Lease as a controller of its own renews: the connector reads the
        # controller's health from it whichever layout runs, and tells the hub.
        heartbeat = Heartbeat(
            self.kube,
            health,
            namespace=self.namespace,
            instance=self._instance,
            elected=False,
            clock=self.clock,
            interval_s=self.settings.heartbeat_seconds,
        )
        beating = asyncio.create_task(heartbeat.run(), name="controller-heartbeat")
        announcing = asyncio.create_task(self._announce(health.ready), name="controller-ready")
        stop_reason = "asked to stop"
        try:
            await controller.run(health.ready)
        except ExceptionGroup as group:
            # The controller's loops run in a task group: say what failed, not that a group did.
            # An apiserver answer it cannot take is a known failure (logged without traceback).
            errors = _leaves(group)
            known = [e for e in errors if isinstance(e, ControllerError)]
            stop_reason = " ".join(str(known[0] if known else errors[0]).split())
            if known and len(known) == len(errors):
                raise known[0] from group
            raise
        except Exception as e:
            stop_reason = " ".join(str(e).split()) or type(e).__name__
            raise
        else:
            stop_reason = "the controller stopped by itself"
        finally:
            self._running = None
            announcing.cancel()
            beating.cancel()
            await asyncio.gather(announcing, beating, return_exceptions=True)
            # Its last word, before the connector tells the hub of the failure.
            await heartbeat.stopped(stop_reason)
        raise ComponentStopped("the controller stopped by itself")

    async def _announce(self, ready: asyncio.Event) -> None:
        await ready.wait()
        recovered = self._failed_until is not None
        self._failed_until = None
        if recovered:
            log.info("controller: reconciling again after %d restart(s)", self.restarts)
        else:
            log.info("controller: reconciling in %s", self.namespace or "every namespace")
        self.on_change()

    def _failed(self, error: Exception, delay: float) -> None:
        self.restarts += 1
        # One line: it is shown in /readyz and, through the inventory digest, by the hub.
        self.last_error = " ".join(str(error).split()) or type(error).__name__
        self.last_error_at = self.clock()
        self._failed_until = time.monotonic() + delay
        if self._current is not None:
            self._current.stopped = f"failed: {self.last_error}"
        self.on_change()

    def health(self) -> tuple[bool, str]:
        """Ready once its watches are synced; not while failed or (re)starting."""
        if self._stopped:
            return False, "stopped"
        if self._failed_until is not None:
            wait = max(0.0, self._failed_until - time.monotonic())
            again = f"starting again in {wait:.1f}s" if wait > 0 else "starting again"
            return False, f"failed ({self.last_error}); {again}, restart {self.restarts}"
        if self._current is None:
            return (
                False,
                "starting: installing the CRDs" if self.settings.manage_crds else "starting",
            )
        return self._current.readiness()

    def heartbeats(self, now: datetime) -> list[ReplicaHeartbeat]:
        """This process's controller as its heartbeat Lease would say it at `now`, for the
        connector's readiness (`KubernetesExecutor.local_heartbeats`): what the Lease says,
        without a request to the apiserver, and a failure or a start seen at once rather than
        at the next write. Starting or failed, it is live only once it runs again and says why
        it is not ready as `health()` does."""
        current = self._current
        said = (
            heartbeat_of(current, elected=False)
            if current is not None
            else ControllerHeartbeat(version=self.version)
        )
        ready, reason = self.health()
        live = said.live and not self._stopped and self._failed_until is None
        last_error, last_error_at = said.last_error, said.last_error_at
        if self.last_error_at is not None and (
            last_error_at is None or self.last_error_at >= last_error_at
        ):
            last_error, last_error_at = self.last_error, self.last_error_at
        heartbeat = ControllerHeartbeat(
            version=said.version,
            role=said.role,
            live=live,
            ready=ready and live,
            reason=reason,
            watches=said.watches,
            last_error=last_error,
            last_error_at=last_error_at,
            reconciles=said.reconciles,
            queue_depth=said.queue_depth,
        )
        interval = self.settings.heartbeat_seconds
        return [
            ReplicaHeartbeat(
                name=self._instance,
                renewed_at=now,
                duration_s=max(1, int(3 * interval)),
                heartbeat=heartbeat,
            )
        ]

    def samples(self) -> list[Sample]:
        """The controller's own metrics (while one runs) and the component's."""
        healthy, _ = self.health()
        samples: list[Sample] = list(self._current.samples()) if self._current else []
        samples += [
            (
                "fleetbus_edge_component_up",
                "gauge",
                "1 while the component runs and is ready.",
                healthy,
                {"component": COMPONENT},
            ),
            (
                "fleetbus_edge_component_restarts_total",
                "counter",
                "Times the component failed and was started again.",
                self.restarts,
                {"component": COMPONENT},
            ),
        ]
        return samples


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found


def executor_with_controller(
    kubeconfig: Path,
    cluster: str,
    settings: ControllerSettings,
    *,
    namespace: str | None = None,
    context: str | None = None,
) -> tuple[KubernetesExecutor, ControllerComponent]:
    """The Kubernetes executor and the controller over its HTTP client, reconciling in the
    executor's namespace (where the connector writes Tasks and Steps: `namespace`, else the
    kubeconfig context's, else fleetbus-system), and reading the Tasks from the controller's
    Task informer."""
    executor = KubernetesExecutor.from_kubeconfig(
        kubeconfig, cluster=cluster, namespace=namespace, context=context
    )
    component = ControllerComponent(
        kube=Kube.sharing(executor.http_client),
        namespace=executor.namespace,
        settings=settings,
        version=fleetbus_version(),
    )
    # One watch and one cache of the Tasks for both components.
    executor.shared_tasks = component.tasks
    component.task_listeners.append(executor.tasks_changed)
    # Its health read in the process, not from its heartbeat Lease every readiness check.
    executor.local_heartbeats = component.heartbeats
    return executor, component
