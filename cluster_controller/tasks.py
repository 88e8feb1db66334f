"""The Task and Tasklet reconcilers, run together under one key per Task.

A Task runs its `init` Steps, then makes its Tasklet from `template` (owned by the Task) and the
Tasklet runs `init`, `install` and `postInstall`; each phase waits for the one before. Status
rolls up Step → Tasklet → Task. When the spec moves to a new taskset version, Steps the Task no
longer names are removed once the new version is Ready, so an upgrade never leaves a gap.

Deletion is held by a finalizer on both: the Tasklet runs its preDelete Steps and removes its
objects, then the Task runs its own preDelete Steps and removes the rest, deletes its Step
resources and lets go. Nothing relies on garbage collection: every object is deleted
explicitly, in the reverse of the install order.

Task, Tasklet and Steps of one Task are worked on by one worker at a time (the work queue is
keyed by Task), so the reconcilers never race each other over a Step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import msgspec

from cluster_controller.errors import Conflict, ControllerError, NotFound
from cluster_controller.hooks import is_post_delete, next_release, settle_release
from cluster_controller.informer import Informer
from cluster_controller.kube import Kube
from cluster_controller.plan import RUN_PHASES, Removal, plan_prune, removal_order
from cluster_controller.recorder import rfc3339
from cluster_controller.rollup import (
    PhaseOutcome,
    drift_summary,
    task_status,
    tasklet_status,
)
from cluster_controller.steps import (
    StepRunner,
    TaskContext,
    completion_digest,
    drift_policy_of,
    runs_in,
)
from kube_contract.model import (
    API_VERSION,
    FIELD_MANAGER,
    FINALIZER,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_TASK,
    MANAGED_BY,
    DriftSummary,
    Meta,
    ReleaseStatus,
    StepResource,
    TaskletResource,
    TaskResource,
    TaskStatus,
    decode_step,
    decode_task,
    decode_tasklet,
    status_body,
)
from kube_contract.resources import STEP, TASK, TASKLET, ResourceInfo

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a reconcile pass asks of the queue: come back after `retry_after` seconds, or not."""

    retry_after: float | None = None


RETRY_TRANSIENT = 5.0
RETRY_CONFLICT = 0.5


def task_of_step(obj: dict[str, Any]) -> str | None:
    """The Steps informer's index: `<namespace>/<task>` of the Task a Step belongs to."""
    task = (obj.get("spec") or {}).get("task")
    if not task:
        return None
    return f"{(obj.get('metadata') or {}).get('namespace') or ''}/{task}"


class TaskReconciler:
    def __init__(
        self,
        kube: Kube,
        runner: StepRunner,
        *,
        tasks: Informer,
        tasklets: Informer,
        steps: Informer,
        clock: Callable[[], datetime],
    ) -> None:
        self.kube = kube
        self.runner = runner
        self.tasks = tasks
        self.tasklets = tasklets
        self.steps = steps
        self.clock = clock
        self.suspects: dict[TaskKey, set[str]] = {}
        """Steps whose objects looked drifted on a watch event, per Task, to confirm."""
        self.sightings: dict[tuple[TaskKey, str], dict[str, Any]] = {}
        """The live object of a suspect Step as its watch last showed it: the drift check uses
        it instead of reading the object again (kept only until that check)."""

    # --- reads -------------------------------------------------------------------------------

    def steps_of(self, namespace: str, task: str) -> dict[str, StepResource]:
        found: dict[str, StepResource] = {}
        for obj in self.steps.indexed(f"{namespace}/{task}"):
            metadata = obj.get("metadata") or {}
            try:
                found[str(metadata["name"])] = decode_step(obj)
            except msgspec.ValidationError as e:
                log.warning("Step %s/%s is malformed: %s", namespace, metadata.get("name"), e)
        return found

    @staticmethod
    def release_of(task: TaskResource) -> ReleaseStatus:
        """The release the Task's spec is applied as (`hooks.next_release`)."""
        status = task.status
        ready_digest = status.digest if status.phase == "Ready" else ""
        return next_release(status.release, task.spec.digest, ready_digest=ready_digest)

    @classmethod
    def context(cls, task: TaskResource, release: ReleaseStatus | None = None) -> TaskContext:
        release = release or cls.release_of(task)
        return TaskContext(
            task=task.metadata.name,
            namespace=task.metadata.namespace,
            default_namespace=task.spec.namespace or task.metadata.namespace,
            drift_policy=task.spec.drift_policy,
            ignore_paths=tuple(task.spec.ignore_paths),
            revision=max(release.revision, 1),
            upgrade=release.upgrade,
        )

    def suspect(self, key: TaskKey, step: str, live: dict[str, Any] | None = None) -> None:
        """Mark a Step's object for a drift check; `live`: the object its watch just showed
        (None when it was deleted or is not at hand: the check reads it)."""
        self.suspects.setdefault(key, set()).add(step)
        if live is None:
            self.sightings.pop((key, step), None)
        else:
            self.sightings[(key, step)] = live

    def saw(self, key: TaskKey, step: str, live: dict[str, Any] | None) -> None:
        """A newer sighting of a suspect's object (one that no longer looks drifted, say)
        replaces the one its check would use."""
        if (key, step) in self.sightings:
            if live is None:
                del self.sightings[(key, step)]
            else:
                self.sightings[(key, step)] = live

    def _forget_suspects(self, key: TaskKey) -> None:
        for step in self.suspects.pop(key, set()):
            self.sightings.pop((key, step), None)

    # --- writes ------------------------------------------------------------------------------

    async def _write_status(
        self,
        info: ResourceInfo,
        metadata: Meta,
        current: dict[str, Any],
        status: msgspec.Struct,
    ) -> None:
        body = status_body(status)
        if current.get("status") == body:
            return
        stored = await self.kube.apply(
            {
                "apiVersion": API_VERSION,
                "kind": info.kind,
                "metadata": {"name": metadata.name, "namespace": metadata.namespace},
                "status": body,
            },
            field_manager=FIELD_MANAGER,
            subresource="status",
            info=info,
        )
        (self.tasks if info.kind == "Task" else self.tasklets).remember(stored)

    async def _set_finalizer(
        self, info: ResourceInfo, obj: dict[str, Any], present: bool
    ) -> dict[str, Any]:
        metadata = obj["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if (FINALIZER in finalizers) == present:
            return obj
        finalizers = (
            [*finalizers, FINALIZER] if present else [f for f in finalizers if f != FINALIZER]
        )
        try:
            stored = await self.kube.patch(
                info,
                metadata["name"],
                {
                    "metadata": {
                        "resourceVersion": metadata["resourceVersion"],
                        "finalizers": finalizers,
                    }
                },
                namespace=metadata["namespace"],
            )
        except NotFound:
            return obj
        if present:
            (self.tasks if info.kind == "Task" else self.tasklets).remember(stored)
        return stored

    # --- the reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: TaskKey) -> Outcome:
        namespace, name = key
        obj = self.tasks.get(namespace, name)
        if obj is None:
            self._forget_suspects(key)
            return Outcome()
        try:
            task = decode_task(obj)
        except msgspec.ValidationError as e:
            log.warning("Task %s/%s is malformed: %s", namespace, name, e)
            return Outcome()
        try:
            if task.metadata.deleting:
                return await self._finalize(task, obj)
            return await self._run(task, obj)
        except Conflict as e:
            log.info("Task %s/%s: %s; trying again", namespace, name, e)
            return Outcome(retry_after=RETRY_CONFLICT)

    async def _run(self, task: TaskResource, obj: dict[str, Any]) -> Outcome:
        key = (task.metadata.namespace, task.metadata.name)
        obj = await self._set_finalizer(TASK, obj, True)
        release = self.release_of(task)
        ctx = self.context(task, release)
        steps = self.steps_of(*key)
        # Drift first: a correction is re-applying one object, and nothing below is needed for
        # it; the phases are walked after it as on every reconcile.
        await self._check_drift(key, ctx, task, steps)
        init = await self.runner.run_phase(ctx, "init", task.spec.init, steps)
        tasklet_outcomes = self._unreached(ctx, task.spec.template.spec, steps)
        tasklet_name = ""
        if init.complete:
            tasklet_name = task.metadata.name
            tasklet_obj = await self._ensure_tasklet(task)
            tasklet = decode_tasklet(tasklet_obj)
            if tasklet.metadata.deleting:
                await self._finalize_tasklet(ctx, tasklet, tasklet_obj, steps, task_deleting=False)
            else:
                tasklet_outcomes = await self._run_tasklet(ctx, tasklet, steps)
                await self._write_status(
                    TASKLET,
                    tasklet.metadata,
                    tasklet_obj,
                    tasklet_status(
                        tasklet.status,
                        tasklet_outcomes,
                        generation=tasklet.metadata.generation,
                        drift=self._drift(ctx, tasklet.spec.all_steps(), steps),
                        deleting=False,
                        now=rfc3339(self.clock()),
                    ),
                )
        all_complete = init.complete and all(o.complete for o in tasklet_outcomes)
        if all_complete:
            await self._prune(ctx, task, steps)
        wanted = task.spec.all_steps()
        status = task_status(
            task.status,
            task.spec,
            generation=task.metadata.generation,
            init=init,
            tasklet=tasklet_outcomes,
            tasklet_name=tasklet_name,
            drift=self._drift(ctx, wanted, steps),
            objects=len(wanted) - len(task.spec.pre_delete),
            deleting=False,
            now=rfc3339(self.clock()),
        )
        status = msgspec.structs.replace(
            status, release=settle_release(release, ready=status.phase == "Ready")
        )
        await self._write_status(TASK, task.metadata, obj, status)
        errors = init.errors or any(o.errors for o in tasklet_outcomes)
        return Outcome(retry_after=RETRY_TRANSIENT if errors else None)

    @staticmethod
    def _drift(
        ctx: TaskContext, names: Iterable[str], steps: dict[str, StepResource]
    ) -> DriftSummary:
        present = [steps[n] for n in names if n in steps]
        return drift_summary(
            (step.status for step in present),
            (step.status for step in present if drift_policy_of(ctx, step) == "report"),
        )

    def _unreached(
        self, ctx: TaskContext, spec: Any, steps: dict[str, StepResource]
    ) -> list[PhaseOutcome]:
        outcomes = []
        for phase in RUN_PHASES:
            names = [n for n in spec.phase(phase) if runs_in(ctx, phase, steps.get(n))]
            ready = sum(
                1
                for n in names
                if n in steps
                and steps[n].status.completed_digest == completion_digest(ctx, steps[n])
            )
            outcomes.append(PhaseOutcome(phase=phase, total=len(names), ready=ready))
        return outcomes

    async def _ensure_tasklet(self, task: TaskResource) -> dict[str, Any]:
        """The Tasklet made from the Task's template (applied only when it differs)."""
        namespace, name = task.metadata.namespace, task.metadata.name
        spec = msgspec.to_builtins(task.spec.template.spec)
        current = self.tasklets.get(namespace, name)
        if current is not None:
            owners = (current.get("metadata") or {}).get("ownerReferences") or []
            owned = any(o.get("uid") == task.metadata.uid for o in owners)
            finalized = FINALIZER in ((current.get("metadata") or {}).get("finalizers") or [])
            if owned and finalized and (current.get("spec") or {}) == spec:
                return current
            if (current.get("metadata") or {}).get("deletionTimestamp"):
                return current
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "Tasklet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_TASK: name},
                "finalizers": [FINALIZER],
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "Task",
                        "name": name,
                        "uid": task.metadata.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
        }
        stored = await self.kube.apply(manifest, field_manager=FIELD_MANAGER, info=TASKLET)
        self.tasklets.remember(stored)
        return stored

    async def _run_tasklet(
        self, ctx: TaskContext, tasklet: TaskletResource, steps: dict[str, StepResource]
    ) -> list[PhaseOutcome]:
        outcomes: list[PhaseOutcome] = []
        reached = True
        unreached_phases = self._unreached(ctx, tasklet.spec, steps)
        for phase, unreached in zip(RUN_PHASES, unreached_phases, strict=True):
            if not reached:
                outcomes.append(unreached)
                continue
            outcome = await self.runner.run_phase(ctx, phase, tasklet.spec.phase(phase), steps)
            outcomes.append(outcome)
            reached = outcome.complete
        return outcomes

    async def _check_drift(
        self,
        key: TaskKey,
        ctx: TaskContext,
        task: TaskResource,
        steps: dict[str, StepResource],
    ) -> None:
        suspects = self.suspects.pop(key, set())
        sightings = {name: self.sightings.pop((key, name), None) for name in suspects}
        wanted = set(task.spec.all_steps())
        for name in sorted(suspects):
            step = steps.get(name)
            if step is None or name not in wanted:
                continue
            try:
                steps[name] = await self.runner.check_drift(ctx, step, seen=sightings[name])
            except ControllerError as e:
                log.warning("drift check of Step %s failed: %s", name, e)
                self.suspect(key, name)
                raise

    async def _prune(
        self, ctx: TaskContext, task: TaskResource, steps: dict[str, StepResource]
    ) -> None:
        """Remove what the Task no longer names (a previous version's objects)."""
        settled = {name for name, step in steps.items() if _settled_for(step, task)}
        stale = plan_prune(task.spec.all_steps(), self._removals(steps, settled))
        if not stale:
            return
        waiting = await self.runner.remove(ctx, stale, steps)
        gone = {r.name for r in stale} - set(waiting)
        for name in gone:
            await self.kube.delete(STEP, name, namespace=ctx.namespace)
            steps.pop(name, None)

    @staticmethod
    def _removals(steps: dict[str, StepResource], only: set[str] | None = None) -> list[Removal]:
        return [
            Removal(name=name, ref=step.spec.ref, phase=step.spec.phase)
            for name, step in steps.items()
            if only is None or name in only
        ]

    # --- deletion ----------------------------------------------------------------------------

    async def _finalize_tasklet(
        self,
        ctx: TaskContext,
        tasklet: TaskletResource,
        obj: dict[str, Any],
        steps: dict[str, StepResource],
        *,
        task_deleting: bool,
    ) -> bool:
        """Tasklet teardown: its preDelete Steps, then its objects; True once it let go."""
        pre_delete = await self.runner.run_phase(ctx, "preDelete", tasklet.spec.pre_delete, steps)
        outcomes = [*self._unreached(ctx, tasklet.spec, steps), pre_delete]
        now = rfc3339(self.clock())
        status = tasklet_status(
            tasklet.status,
            outcomes,
            generation=tasklet.metadata.generation,
            drift=tasklet.status.drift,
            deleting=True,
            now=now,
        )
        if not pre_delete.complete:
            await self._write_status(TASKLET, tasklet.metadata, obj, status)
            return False
        names = set(tasklet.spec.all_steps())
        waiting = await self.runner.remove(ctx, removal_order(self._removals(steps, names)), steps)
        if waiting:
            await self._write_status(
                TASKLET,
                tasklet.metadata,
                obj,
                msgspec.structs.replace(status, message=f"removing objects of {waiting[0]}"),
            )
            return False
        if not task_deleting:
            for name in names & set(steps):
                steps[name] = await self.runner.reset(steps[name])
        await self._set_finalizer(TASKLET, obj, False)
        return True

    async def _finalize(self, task: TaskResource, obj: dict[str, Any]) -> Outcome:
        namespace, name = task.metadata.namespace, task.metadata.name
        if FINALIZER not in task.metadata.finalizers:
            return Outcome()
        ctx = self.context(task)
        steps = self.steps_of(namespace, name)
        now = rfc3339(self.clock())
        unreached = self._unreached(ctx, task.spec.template.spec, steps)
        init_counts = PhaseOutcome(phase="init", total=len(task.spec.init), ready=0)

        def deleting_status(outcome: PhaseOutcome, message: str) -> TaskStatus:
            base = task_status(
                task.status,
                task.spec,
                generation=task.metadata.generation,
                init=init_counts,
                tasklet=[*unreached, outcome],
                tasklet_name=name,
                drift=task.status.drift,
                objects=len(task.spec.all_steps()),
                deleting=True,
                now=now,
            )
            return msgspec.structs.replace(base, message=message)

        post_delete = [n for n in task.spec.pre_delete if n in steps and _post_delete(steps[n])]
        before = [n for n in task.spec.pre_delete if n not in post_delete]
        pre_delete = await self.runner.run_phase(ctx, "preDelete", before, steps)
        if not pre_delete.complete:
            await self._write_status(
                TASK,
                task.metadata,
                obj,
                deleting_status(pre_delete, "running preDelete steps"),
            )
            return Outcome(retry_after=RETRY_TRANSIENT if pre_delete.errors else None)
        tasklet_obj = self.tasklets.get(namespace, name)
        if tasklet_obj is not None:
            tasklet = decode_tasklet(tasklet_obj)
            if not tasklet.metadata.deleting:
                await self.kube.delete(TASKLET, name, namespace=namespace)
                refreshed = await self.kube.get(TASKLET, name, namespace)
                if refreshed is None:
                    tasklet_obj = None
                else:
                    tasklet_obj = refreshed
                    tasklet = decode_tasklet(refreshed)
            if tasklet_obj is not None and FINALIZER in tasklet.metadata.finalizers:
                done = await self._finalize_tasklet(
                    ctx, tasklet, tasklet_obj, steps, task_deleting=True
                )
                if not done:
                    await self._write_status(
                        TASK,
                        task.metadata,
                        obj,
                        deleting_status(pre_delete, "waiting for the Tasklet to be removed"),
                    )
                    return Outcome()
        others = set(steps) - set(post_delete)
        waiting = await self.runner.remove(ctx, removal_order(self._removals(steps, others)), steps)
        if waiting:
            await self._write_status(
                TASK,
                task.metadata,
                obj,
                deleting_status(pre_delete, f"removing objects of {waiting[0]}"),
            )
            return Outcome()
        if post_delete:
            after = await self.runner.run_phase(ctx, "preDelete", post_delete, steps)
            if not after.complete:
                await self._write_status(
                    TASK,
                    task.metadata,
                    obj,
                    deleting_status(after, "running post-delete hooks"),
                )
                return Outcome(retry_after=RETRY_TRANSIENT if after.errors else None)
            waiting = await self.runner.remove(
                ctx, removal_order(self._removals(steps, set(post_delete))), steps
            )
            if waiting:
                return Outcome()
        for step_name in steps:
            await self.kube.delete(STEP, step_name, namespace=namespace)
        self._forget_suspects((namespace, name))
        await self._set_finalizer(TASK, obj, False)
        log.info("Task %s/%s removed", namespace, name)
        return Outcome()


def _post_delete(step: StepResource) -> bool:
    return is_post_delete(step.spec.hook)


def _settled_for(step: StepResource, task: TaskResource) -> bool:
    """Whether a Step belongs to the Task's present or past, never to a version yet to come.

    The connector writes a new version's Steps before it updates the Task, so a Step the Task
    does not name yet may be about to be named: only Steps already applied, or labelled with a
    generation the Task has reached, can be stale.
    """
    if step.status.applied_digest:
        return True
    generation = step.metadata.labels.get(LABEL_GENERATION, "")
    return generation.isdigit() and int(generation) <= task.spec.generation
