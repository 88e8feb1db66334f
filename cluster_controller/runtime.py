"""The controller process: informers, one work queue, workers, resync, and drift watches.

Why a hand-written asyncio reconciler on plain REST (`kube`, over `kube_http`) instead of kopf:
the controller runs at the edge next to the connector, where memory is the budget. kopf alone
imports ~41 MiB (≈92 MiB when both Kubernetes clients are installed) and is not a client
(server-side apply of arbitrary kinds would still need one). What
kopf would provide is small when written for exactly these four CRDs: a list-then-watch loop
that survives 410 Gone (`informer`), a work queue serialising per key (the `workqueue` package,
shared with the connector), finalizers, status through the status subresource, a periodic
resync and a Lease for leader election (`leader`).

Event flow: every watch event only *enqueues a key*. Task, Tasklet and Step events, and events
of the objects the controller applied (selected by the `fleetbus.io/step` label, one watch per
kind, started the first time the controller applies that kind) enqueue the owning Task; events
of a fleetbus Namespace or its parts enqueue that Namespace. For applied objects the watch
callback also runs the cheap drift check and marks suspects for the Task's next reconcile.
A resync re-queues everything and re-checks every applied object for drift, as a safety net
for anything a watch missed (and once right after start, for what changed while it was down).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import msgspec

from cluster_controller.errors import ControllerError, NotFound
from cluster_controller.informer import Informer
from cluster_controller.kube import Kube
from cluster_controller.namespaces import WATCHED_KINDS, NamespaceReconciler
from cluster_controller.recorder import EventRecorder
from cluster_controller.steps import StepRunner
from cluster_controller.tasks import Outcome, TaskReconciler, task_of_step
from kube_contract.model import (
    LABEL_NAMESPACE_OWNER,
    LABEL_STEP,
    LABEL_STEP_JOB,
    LABEL_TASK,
    LABEL_TASK_NAMESPACE,
    decode_step,
    decode_task,
)
from kube_contract.resources import FLEETBUS_NAMESPACE, JOB, STEP, TASK, TASKLET, ResourceInfo
from workqueue import WorkQueue

log = logging.getLogger(__name__)

QueueKey = tuple[str, str, str]
"""("task", namespace, name) or ("namespace", "", name)."""

MAX_FAILURE_BACKOFF = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class ControllerOptions(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str = ""
    """Where Tasks, Tasklets and Steps are watched; "" for every namespace."""
    workers: int = 4
    resync_seconds: float = 600.0
    watch_timeout: int = 300
    instance: str = msgspec.field(default_factory=socket.gethostname)


class Controller:
    def __init__(
        self,
        kube: Kube,
        options: ControllerOptions | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        tasks: Informer | None = None,
    ) -> None:
        """`tasks`: an informer of the Tasks in `options.namespace` that outlives this
        controller, its cache shared with another component of the process (see
        `shared_task_informer`); its events must reach `on_task_event`. It still runs (and
        fails) with this controller; without it the controller makes its own."""
        self.kube = kube
        self.options = options or ControllerOptions()
        self.clock = clock
        self.queue: WorkQueue[QueueKey] = WorkQueue()
        self._failures: dict[QueueKey, int] = {}
        self._object_watches: dict[tuple[str, str], Informer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.reconciles = 0
        self.last_error = ""
        """The last reconcile or watch failure ("" while there was none)."""
        self.last_error_at: datetime | None = None
        scope = self.options.namespace
        timeout = self.options.watch_timeout
        self.tasks = tasks or Informer(
            kube, TASK, namespace=scope, on_event=self._on_task, watch_timeout=timeout
        )
        self.tasklets = Informer(
            kube,
            TASKLET,
            namespace=scope,
            on_event=self._on_tasklet,
            watch_timeout=timeout,
        )
        self.steps = Informer(
            kube,
            STEP,
            namespace=scope,
            on_event=self._on_step,
            index=task_of_step,
            watch_timeout=timeout,
        )
        self.namespaces = Informer(
            kube, FLEETBUS_NAMESPACE, on_event=self._on_namespace, watch_timeout=timeout
        )
        self.recorder = EventRecorder(kube, instance=self.options.instance)
        self.runner = StepRunner(
            kube,
            self.recorder,
            clock=clock,
            on_kind=self.watch_kind,
            remember=self.steps.remember,
        )
        self.task_reconciler = TaskReconciler(
            kube,
            self.runner,
            tasks=self.tasks,
            tasklets=self.tasklets,
            steps=self.steps,
            clock=clock,
        )
        self.namespace_reconciler = NamespaceReconciler(
            kube, namespaces=self.namespaces, clock=clock
        )

    # --- watch callbacks (enqueue only) --------------------------------------------------------

    def on_task_event(self, event_type: str, obj: dict[str, Any]) -> None:
        """A Task event of a shared Task informer (see `__init__`)."""
        self._on_task(event_type, obj)

    def _on_task(self, event_type: str, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        self.queue.add(("task", str(metadata.get("namespace") or ""), str(metadata.get("name"))))

    def _on_tasklet(self, event_type: str, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        task = (metadata.get("labels") or {}).get(LABEL_TASK) or metadata.get("name")
        self.queue.add(("task", str(metadata.get("namespace") or ""), str(task)))

    def _on_step(self, event_type: str, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        task = (obj.get("spec") or {}).get("task")
        if task:
            self.queue.add(("task", str(metadata.get("namespace") or ""), str(task)))

    def _on_namespace(self, event_type: str, obj: dict[str, Any]) -> None:
        self.queue.add(("namespace", "", str((obj.get("metadata") or {}).get("name"))))

    def _on_namespace_part(self, event_type: str, obj: dict[str, Any]) -> None:
        owner = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_NAMESPACE_OWNER)
        if owner:
            self.queue.add(("namespace", "", str(owner)))

    def _on_step_job(self, event_type: str, obj: dict[str, Any]) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        task = labels.get(LABEL_TASK)
        if task:
            self.queue.add(("task", str(labels.get(LABEL_TASK_NAMESPACE) or ""), str(task)))

    def _object_handler(self, info: ResourceInfo) -> Callable[[str, dict[str, Any]], None]:
        def handle(event_type: str, obj: dict[str, Any]) -> None:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            task_name = labels.get(LABEL_TASK)
            task_namespace = str(labels.get(LABEL_TASK_NAMESPACE) or "")
            step_name = labels.get(LABEL_STEP)
            if not task_name or not step_name:
                return
            key = (task_namespace, str(task_name))
            task_obj = self.tasks.get(*key)
            step_obj = self.steps.get(task_namespace, str(step_name))
            if task_obj is not None and step_obj is not None:
                try:
                    task = decode_task(task_obj)
                    step = decode_step(step_obj)
                except msgspec.ValidationError:
                    return
                ctx = TaskReconciler.context(task)
                seen = None if event_type == "DELETED" else obj
                if self.runner.looks_drifted(ctx, step, info, event_type, obj):
                    self.task_reconciler.suspect(key, str(step_name), seen)
                else:
                    self.task_reconciler.saw(key, str(step_name), seen)
            self.queue.add(("task", *key))

        return handle

    # --- object watches ------------------------------------------------------------------------

    def watch_kind(self, info: ResourceInfo) -> None:
        """Start watching the objects of a kind the controller applies (once per kind)."""
        key = (info.api_version, info.kind)
        if key in self._object_watches:
            return
        informer = Informer(
            self.kube,
            info,
            on_event=self._object_handler(info),
            label_selector=LABEL_STEP,
            keep_objects=False,
            watch_timeout=self.options.watch_timeout,
        )
        self._object_watches[key] = informer
        self._spawn(self._supervise_object_watch(key, informer), f"watch-{info.plural}")

    async def _requeue_tasks_once_synced(self, informer: Informer) -> None:
        """A new watch sees nothing of what changed before it listed: an object that finished
        and was removed meanwhile (a Job with ttlSecondsAfterFinished: 0) sends no event. So
        once it has listed, every Task looks again."""
        await informer.synced.wait()
        known = self.tasks.keys()
        for namespace, name in known:
            self.queue.add(("task", namespace, name))

    async def _supervise_object_watch(self, key: tuple[str, str], informer: Informer) -> None:
        self._spawn(self._requeue_tasks_once_synced(informer), f"requeue-{informer.info.plural}")
        try:
            await informer.run()
        except NotFound:
            log.info("%s is no longer served; its watch stops", informer.info.plural)
        except ControllerError as e:
            log.warning("watch of %s ended: %s", informer.info.plural, e)
            self.record_error(f"watch of {informer.info.plural} ended: {e}")
        finally:
            if self._object_watches.get(key) is informer:
                del self._object_watches[key]

    def record_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = self.clock()

    def watched_kinds(self) -> list[tuple[str, str]]:
        return sorted(self._object_watches)

    # --- running -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled. `ready` is set once the caches are synced and work queued."""
        core = [self.tasks, self.tasklets, self.steps, self.namespaces]
        fixed = [
            Informer(
                self.kube,
                info,
                on_event=self._on_namespace_part,
                label_selector=LABEL_NAMESPACE_OWNER,
                keep_objects=False,
                watch_timeout=self.options.watch_timeout,
            )
            for info in WATCHED_KINDS
        ]
        fixed.append(
            Informer(
                self.kube,
                JOB,
                on_event=self._on_step_job,
                label_selector=LABEL_STEP_JOB,
                keep_objects=False,
                watch_timeout=self.options.watch_timeout,
            )
        )
        try:
            async with asyncio.TaskGroup() as group:
                for informer in [*core, *fixed]:
                    group.create_task(informer.run(), name=f"informer-{informer.info.plural}")
                # `listed`, not `synced`: a shared Task informer synced before this run.
                await asyncio.gather(*(informer.listed.wait() for informer in core))
                await self._watch_applied_kinds()
                self.resync()
                for index in range(max(1, self.options.workers)):
                    group.create_task(self._worker(), name=f"reconcile-worker-{index}")
                group.create_task(self._resync_loop(), name="resync")
                if ready is not None:
                    ready.set()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.queue.close()

    async def _watch_applied_kinds(self) -> None:
        """Watch every kind that Steps say was applied (before this process started)."""
        seen: set[tuple[str, str]] = set()
        for obj in self.steps.items():
            ref = (obj.get("status") or {}).get("object") or {}
            api_version, kind = (
                str(ref.get("apiVersion") or ""),
                str(ref.get("kind") or ""),
            )
            if not api_version or not kind or (api_version, kind) in seen:
                continue
            seen.add((api_version, kind))
            try:
                self.watch_kind(await self.kube.resource(api_version, kind))
            except ControllerError as e:
                log.info("not watching %s %s: %s", api_version, kind, e)

    def resync(self) -> None:
        """Queue every Task and Namespace, and re-check every applied object for drift."""
        for obj in self.tasks.items():
            metadata = obj.get("metadata") or {}
            key = (str(metadata.get("namespace") or ""), str(metadata.get("name")))
            try:
                task = decode_task(obj)
            except msgspec.ValidationError:
                continue
            for step in task.spec.all_steps():
                self.task_reconciler.suspect(key, step)
            self.queue.add(("task", *key))
        for obj in self.namespaces.items():
            self._on_namespace("RESYNC", obj)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            self.resync()

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                outcome = await self._reconcile(key)
            except ControllerError as e:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(MAX_FAILURE_BACKOFF, 0.5 * 2 ** (failures - 1))
                log.warning(
                    "reconcile of %s failed (%d in a row): %s; again in %.1fs",
                    "/".join(k for k in key if k),
                    failures,
                    e,
                    delay,
                )
                self.queue.add_after(key, delay)
                self.record_error(f"reconcile of {'/'.join(k for k in key if k)} failed: {e}")
            else:
                self._failures.pop(key, None)
                if outcome.retry_after is not None:
                    self.queue.add_after(key, outcome.retry_after)
            finally:
                self.reconciles += 1
                self.queue.done(key)

    async def _reconcile(self, key: QueueKey) -> Outcome:
        kind, namespace, name = key
        if kind == "task":
            return await self.task_reconciler.reconcile((namespace, name))
        return await self.namespace_reconciler.reconcile(name)
