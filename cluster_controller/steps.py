"""Running Steps: apply, observe, run their Jobs, check and correct drift, remove.

This is the Step reconciler. Task and Tasklet reconcilers hand it the Steps of one phase; it
plans (`plan.plan_phase`), carries the plan out, plans again until nothing is left to do in
this pass, and writes each Step's status when it changed. Everything here is idempotent: a
Step whose spec digest equals its status' `appliedDigest` is not applied again, a server-side
apply of an unchanged manifest changes nothing, and a Job is named after its content.

Errors are sorted at this level: a rejected manifest (400/422, a malformed object) fails the
Step until its spec changes; anything that may pass by itself (the apiserver unreachable, a CRD
not served yet, a namespace still missing or terminating, RBAC not yet granted) is reported in
status and retried with backoff.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from cluster_controller.drift import (
    confirmed_fields,
    decide_step_drift,
    describe_fields,
    proven_fields,
    record_correction,
    respect_ignored,
    suspect_fields,
)
from cluster_controller.errors import (
    ControllerError,
    InvalidManifest,
    KubeRejected,
    NotFound,
)
from cluster_controller.hooks import order_key, revision_digest, runs_now
from cluster_controller.kstatus import (
    NOT_FOUND,
    Readiness,
    compute_status,
    finished_job_from_events,
    job_complete,
)
from cluster_controller.kube import Kube
from cluster_controller.manifests import (
    namespaced,
    step_digest,
    step_job,
    step_job_names,
    step_job_rbac,
    step_object,
)
from cluster_controller.ownership import judge_ownership, keeps_object
from cluster_controller.plan import Blocked, Removal, StepState, plan_phase, stage_of
from cluster_controller.recorder import EventRecorder, rfc3339
from cluster_controller.rollup import PhaseOutcome
from kube_contract.model import (
    API_VERSION,
    FIELD_MANAGER,
    LABEL_MANAGED_BY,
    LABEL_STEP,
    LABEL_STEP_JOB,
    LABEL_TASK,
    LABEL_TASK_NAMESPACE,
    Condition,
    JobPhase,
    JobState,
    StepPhase,
    StepResource,
    StepStatus,
    readiness_conditions,
    set_condition,
    status_body,
    task_field_manager,
)
from kube_contract.resources import (
    EVENT,
    JOB,
    ROLE,
    ROLE_BINDING,
    SERVICE_ACCOUNT,
    STEP,
    ResourceInfo,
)
from taskset.model import DriftPolicy, ObjectRef, Phase

log = logging.getLogger(__name__)

DIGEST_ANNOTATION = "fleetbus.io/step-digest"
OWNER_LABELS = (LABEL_MANAGED_BY, LABEL_TASK, LABEL_TASK_NAMESPACE, LABEL_STEP)
MAX_ROUNDS = 16


class TaskContext(msgspec.Struct, frozen=True, kw_only=True):
    """What every Step of one Task needs to know about the Task."""

    task: str
    namespace: str
    """The Task's (and its Steps') namespace."""
    default_namespace: str
    """Where namespaced objects that name no namespace go."""
    drift_policy: DriftPolicy = "correct"
    ignore_paths: tuple[str, ...] = ()
    revision: int = 1
    """The Task's release revision on this cluster (`hooks.next_release`)."""
    upgrade: bool = False
    """This revision is an upgrade: upgrade hooks run, install hooks do not."""


def drift_policy_of(ctx: TaskContext, step: StepResource) -> DriftPolicy:
    """The Step's own drift policy, else its Task's."""
    return step.spec.drift_policy or ctx.drift_policy


def ignore_paths_of(ctx: TaskContext, step: StepResource) -> tuple[str, ...]:
    """The Task's ignore paths and the Step's own."""
    return (*ctx.ignore_paths, *step.spec.ignore_paths)


def completion_digest(ctx: TaskContext, step: StepResource) -> str:
    """The digest a Step is applied and completed under (hooks: once per revision)."""
    return revision_digest(step.spec, step_digest(step.spec), ctx.revision)


def runs_in(ctx: TaskContext, phase: Phase, step: StepResource | None) -> bool:
    """Whether a Step takes part in its phase in this revision (a missing Step is waited for)."""
    return step is None or runs_now(step.spec.hook, phase, upgrade=ctx.upgrade)


def is_job(ref: ObjectRef) -> bool:
    return ref.kind == "Job" and ref.group == "batch"


def hook_policies(step: StepResource) -> list[str]:
    return list(step.spec.hook.delete_policy) if step.spec.hook is not None else []


def object_readiness(step: StepResource, live: dict[str, Any] | None, now: datetime) -> Readiness:
    """The Step's object, judged by its wait policy; Jobs always wait for Complete."""
    if live is None:
        return NOT_FOUND
    if step.spec.wait == "none":
        return Readiness(status="Current", reason="Applied", message="applied (no wait)")
    if step.spec.wait == "complete" or is_job(step.spec.ref):
        return job_complete(live, now)
    return compute_status(live, now)


class Sighting(msgspec.Struct, frozen=True, kw_only=True):
    """What one pass learned about a Step: readiness, and the status fields to record."""

    readiness: Readiness
    applied: bool = False
    """This pass applied the Step's current spec."""
    object_uid: str = ""
    object_ref: ObjectRef | None = None
    """The object as located: its namespace resolved (none if cluster-scoped)."""
    job: JobState | None = None
    service_account: str = ""
    permanent_failure: bool = False


class StepRunner:
    def __init__(
        self,
        kube: Kube,
        recorder: EventRecorder,
        *,
        clock: Callable[[], datetime],
        on_kind: Callable[[ResourceInfo], None],
        remember: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.kube = kube
        self.remember = remember
        """Told about every Step status written, so the cache never lags the controller."""
        self.recorder = recorder
        self.clock = clock
        self.on_kind = on_kind
        """Told about every kind the controller applies, so it can watch that kind."""

    # --- status ------------------------------------------------------------------------------

    async def write_status(self, step: StepResource, status: StepStatus) -> StepResource:
        """Record `status` if it differs from what the Step holds; the Step as now known."""
        if status == step.status:
            return step
        body = {
            "apiVersion": API_VERSION,
            "kind": "Step",
            "metadata": {
                "name": step.metadata.name,
                "namespace": step.metadata.namespace,
            },
            "status": status_body(status),
        }
        try:
            stored = await self.kube.apply(
                body, field_manager=FIELD_MANAGER, subresource="status", info=STEP
            )
        except NotFound:
            return step
        if self.remember is not None:
            self.remember(stored)
        return msgspec.structs.replace(step, status=status)

    def _status_after(
        self, step: StepResource, sighting: Sighting, *, digest: str, now: str
    ) -> StepStatus:
        old = step.status
        readiness = sighting.readiness
        applied_digest = digest if sighting.applied else old.applied_digest
        if sighting.permanent_failure:
            applied_digest = digest
        done = applied_digest == digest and readiness.current
        completed = digest if done else old.completed_digest
        rejected = digest if sighting.permanent_failure else old.rejected_digest
        if sighting.applied:
            rejected = ""
        phase: StepPhase
        if done or completed == digest:
            phase = "Ready"
        elif readiness.failed:
            phase = "Failed"
        elif applied_digest == digest:
            phase = "Applied"
        else:
            phase = "Pending"
        return msgspec.structs.replace(
            old,
            phase=phase,
            observed_generation=step.metadata.generation,
            object=sighting.object_ref or old.object or step.spec.ref,
            uid=sighting.object_uid or old.uid,
            applied_digest=applied_digest,
            applied_at=now if sighting.applied else old.applied_at,
            completed_digest=completed,
            rejected_digest=rejected,
            ready=phase == "Ready",
            reason=readiness.reason,
            message=readiness.message,
            job=sighting.job if sighting.job is not None else old.job,
            service_account=sighting.service_account or old.service_account,
            conditions=readiness_conditions(
                old.conditions,
                phase=phase,
                reason=readiness.reason or phase,
                message=readiness.message,
                generation=step.metadata.generation,
                now=now,
            ),
        )

    # --- a phase -----------------------------------------------------------------------------

    async def run_phase(
        self,
        ctx: TaskContext,
        phase: Phase,
        names: Sequence[str],
        steps: dict[str, StepResource],
    ) -> PhaseOutcome:
        """Move one phase forward as far as it can go now; `steps` is updated in place.

        Hooks that do not belong to this revision (install hooks on an upgrade, upgrade hooks
        on an install) are not part of the phase."""
        names = [name for name in names if runs_in(ctx, phase, steps.get(name))]
        sightings: dict[str, Sighting] = {}
        errors: dict[str, Blocked] = {}
        attempted: set[str] = set()
        plan = plan_phase(self._states(ctx, names, steps, sightings))
        for _ in range(MAX_ROUNDS):
            todo = [n for n in (*plan.read, *plan.apply) if n not in attempted]
            if not todo:
                break
            for name in todo:
                attempted.add(name)
                step = steps[name]
                try:
                    if name in plan.apply:
                        sighting = await self._apply(ctx, step)
                    else:
                        sighting = await self._observe(ctx, step)
                except (KubeRejected, InvalidManifest) as e:
                    sighting = Sighting(
                        readiness=Readiness(
                            status="Failed", reason="ApplyRejected", message=str(e)
                        ),
                        permanent_failure=True,
                        object_ref=await self._located_or_declared(ctx, step),
                    )
                except ControllerError as e:
                    errors[name] = Blocked(
                        step=name,
                        reason=type(e).__name__,
                        message=f"{step.spec.ref}: {e}",
                        object=str(step.spec.ref),
                    )
                    continue
                sightings[name] = sighting
                now = rfc3339(self.clock())
                status = self._status_after(
                    step, sighting, digest=completion_digest(ctx, step), now=now
                )
                steps[name] = await self.write_status(step, status)
                await self._after_done(ctx, steps[name], sighting)
            plan = plan_phase(self._states(ctx, names, steps, sightings))
        for name, blocked in errors.items():
            step = steps[name]
            status = msgspec.structs.replace(
                step.status, reason=blocked.reason, message=blocked.message
            )
            steps[name] = await self.write_status(step, status)
        present = [steps[n] for n in names if n in steps]
        ready = sum(1 for s in present if s.status.completed_digest == completion_digest(ctx, s))
        if attempted and ready == len(names):
            await self._delete_succeeded_hooks(ctx, present)
        return PhaseOutcome(
            phase=phase,
            total=len(names),
            ready=ready,
            failed=len(plan.failed),
            plan=plan,
            errors=list(errors.values()),
        )

    async def _delete_succeeded_hooks(
        self, ctx: TaskContext, steps: Sequence[StepResource]
    ) -> None:
        """Helm's `hook-succeeded`: once every hook of the phase succeeded, remove those that ask.

        Not one by one: ingress-nginx's admission Job runs as a ServiceAccount that is itself a
        `hook-succeeded` hook of the same phase, and must still exist when the Job's pod starts.
        """
        for step in reversed(steps):
            if "hook-succeeded" not in hook_policies(step) or step.spec.ref.kind == (
                "CustomResourceDefinition"
            ):
                continue
            info, namespace = await self.locate(ctx, step)
            with contextlib.suppress(NotFound):
                await self.kube.delete(info, step.spec.ref.name, namespace=namespace)

    def _states(
        self,
        ctx: TaskContext,
        names: Iterable[str],
        steps: dict[str, StepResource],
        sightings: dict[str, Sighting],
    ) -> list[StepState]:
        states = []
        for name in names:
            step = steps.get(name)
            if step is None or step.metadata.deleting:
                states.append(
                    StepState(
                        name=name,
                        ref=ObjectRef(api_version="v1", kind="Unknown", name=name),
                        digest="",
                        missing=True,
                    )
                )
                continue
            sighting = sightings.get(name)
            readiness = sighting.readiness if sighting is not None else None
            digest = completion_digest(ctx, step)
            if readiness is None and step.status.rejected_digest == digest:
                readiness = Readiness(
                    status="Failed",
                    reason=step.status.reason,
                    message=step.status.message,
                )
            states.append(
                StepState(
                    name=name,
                    ref=step.status.object or step.spec.ref,
                    digest=digest,
                    applied_digest=step.status.applied_digest,
                    completed_digest=step.status.completed_digest,
                    readiness=readiness,
                    order=order_key(step.spec.hook),
                )
            )
        return states

    # --- one Step ----------------------------------------------------------------------------

    async def locate(self, ctx: TaskContext, step: StepResource) -> tuple[ResourceInfo, str]:
        """The REST resource and the namespace of a Step's object."""
        ref = step.spec.ref
        info = await self.kube.resource(ref.api_version, ref.kind)
        return info, namespaced(info.namespaced, ref, ctx.default_namespace)

    def desired(
        self, ctx: TaskContext, step: StepResource, info: ResourceInfo, namespace: str
    ) -> dict[str, Any]:
        manifest = step_object(
            step.spec,
            step=step.metadata.name,
            task_namespace=ctx.namespace,
            namespace=namespace,
        )
        manifest["metadata"].setdefault("annotations", {})[DIGEST_ANNOTATION] = completion_digest(
            ctx, step
        )
        return manifest

    async def _apply(self, ctx: TaskContext, step: StepResource) -> Sighting:
        info, namespace = await self.locate(ctx, step)
        manifest = self.desired(ctx, step, info, namespace)
        name = manifest["metadata"]["name"]
        located = self._located(step, namespace)
        replace = is_job(step.spec.ref) or "before-hook-creation" in hook_policies(step)
        live = await self.kube.get(info, name, namespace)
        ownership = judge_ownership(
            live,
            task=ctx.task,
            task_namespace=ctx.namespace,
            adopt=step.spec.adopt,
            what=str(located),
        )
        if not ownership.allowed:
            log.info("not applying Step %s: %s", step.metadata.name, ownership.message)
            return Sighting(
                readiness=Readiness(
                    status="Failed", reason="OwnershipConflict", message=ownership.message
                ),
                permanent_failure=True,
                object_ref=located,
            )
        if ownership.adopting:
            log.info("Step %s adopts %s", step.metadata.name, located)
        if live is not None and replace:
            live_digest = ((live.get("metadata") or {}).get("annotations") or {}).get(
                DIGEST_ANNOTATION
            )
            if live_digest != manifest["metadata"]["annotations"][DIGEST_ANNOTATION]:
                uid = str((live.get("metadata") or {}).get("uid") or "")
                await self.kube.delete(info, name, namespace=namespace, uid=uid)
                live = await self.kube.get(info, name, namespace)
                if live is not None:
                    return Sighting(
                        readiness=Readiness(
                            status="InProgress",
                            reason="Replacing",
                            message=f"waiting for the previous {info.kind} to be deleted",
                        )
                    )
        manifest = respect_ignored(manifest, live, ignore_paths_of(ctx, step))
        applied = await self.kube.apply(
            manifest, field_manager=task_field_manager(ctx.task), force=True, info=info
        )
        self.on_kind(info)
        return await self._with_job(ctx, step, applied, applied=True, located=located)

    async def _observe(self, ctx: TaskContext, step: StepResource) -> Sighting:
        info, namespace = await self.locate(ctx, step)
        live = await self.kube.get(info, step.spec.ref.name, namespace)
        self.on_kind(info)
        located = self._located(step, namespace)
        if live is None and is_job(step.spec.ref) and step.spec.job is None:
            finished = await self._finished_job(ctx, step, namespace)
            if finished is not None:
                return Sighting(readiness=finished, object_uid=step.status.uid, object_ref=located)
        return await self._with_job(ctx, step, live, applied=False, located=located)

    async def _finished_job(
        self, ctx: TaskContext, step: StepResource, namespace: str
    ) -> Readiness | None:
        """How the Job this Step applied ended, if it is gone already (ttlSecondsAfterFinished).

        Only the Job applied for the Step's current spec counts (its uid is in the status);
        without a verdict in its Events the Job is applied again.
        """
        if not step.status.uid or step.status.applied_digest != completion_digest(ctx, step):
            return None
        events = await self.kube.list(
            EVENT, namespace=namespace, field_selector=f"involvedObject.uid={step.status.uid}"
        )
        return finished_job_from_events(events.items)

    async def _located_or_declared(self, ctx: TaskContext, step: StepResource) -> ObjectRef:
        try:
            _, namespace = await self.locate(ctx, step)
        except ControllerError:
            return step.spec.ref
        return self._located(step, namespace)

    @staticmethod
    def _located(step: StepResource, namespace: str) -> ObjectRef:
        return msgspec.structs.replace(step.spec.ref, namespace=namespace)

    async def _with_job(
        self,
        ctx: TaskContext,
        step: StepResource,
        live: dict[str, Any] | None,
        *,
        applied: bool,
        located: ObjectRef,
    ) -> Sighting:
        """Readiness of the object, then of the Step's Job (created once the object is ready)."""
        now = self.clock()
        readiness = object_readiness(step, live, now)
        uid = str(((live or {}).get("metadata") or {}).get("uid") or "")
        if step.spec.job is None or not readiness.current:
            return Sighting(
                readiness=readiness, applied=applied, object_uid=uid, object_ref=located
            )
        namespace = str(((live or {}).get("metadata") or {}).get("namespace") or "") or (
            ctx.default_namespace
        )
        job_name, account = step_job_names(step.metadata.name, step.spec.job)
        job_live = await self.kube.get(JOB, job_name, namespace)
        if job_live is None:
            await self._ensure_job_rbac(ctx, step, namespace, account)
            manifest = step_job(
                step.spec,
                step=step.metadata.name,
                task_namespace=ctx.namespace,
                namespace=namespace,
                service_account=account,
                job_name=job_name,
            )
            job_live = await self.kube.apply(
                manifest, field_manager=FIELD_MANAGER, force=True, info=JOB
            )
            self.on_kind(JOB)
            await self._delete_stale_jobs(step, namespace, keep=job_name)
        job_readiness = job_complete(job_live, now)
        state: JobPhase = (
            "Complete"
            if job_readiness.current
            else "Failed"
            if job_readiness.failed
            else "Running"
            if ((job_live or {}).get("status") or {}).get("startTime")
            else "Pending"
        )
        return Sighting(
            readiness=Readiness(
                status=job_readiness.status,
                reason=f"Job{job_readiness.reason}" if job_readiness.reason else "Job",
                message=f"Job {job_name}: {job_readiness.message}",
            ),
            applied=applied,
            object_uid=uid,
            object_ref=located,
            job=JobState(name=job_name, state=state, message=job_readiness.message),
            service_account=account,
        )

    async def _ensure_job_rbac(
        self, ctx: TaskContext, step: StepResource, namespace: str, account: str
    ) -> None:
        ref = step.spec.ref
        target = await self.kube.resource(ref.api_version, ref.kind)
        for manifest in step_job_rbac(
            step=step.metadata.name,
            task=ctx.task,
            task_namespace=ctx.namespace,
            namespace=namespace,
            service_account=account,
            target_group=target.group,
            target_plural=target.plural,
        ):
            await self.kube.apply(manifest, field_manager=FIELD_MANAGER, force=True)

    async def _delete_stale_jobs(self, step: StepResource, namespace: str, keep: str) -> None:
        listing = await self.kube.list(
            JOB,
            namespace=namespace,
            label_selector=f"{LABEL_STEP_JOB}={step.metadata.name}",
        )
        for job in listing.items:
            name = str(job["metadata"]["name"])
            if name != keep:
                await self.kube.delete(JOB, name, namespace=namespace)

    async def _after_done(self, ctx: TaskContext, step: StepResource, sighting: Sighting) -> None:
        """Helm's `hook-failed`: remove a hook object as soon as it failed. (`hook-succeeded`
        waits for the whole phase: `_delete_succeeded_hooks`.)"""
        if (
            sighting.readiness.failed
            and "hook-failed" in hook_policies(step)
            and step.spec.ref.kind != "CustomResourceDefinition"
        ):
            info, namespace = await self.locate(ctx, step)
            await self.kube.delete(info, step.spec.ref.name, namespace=namespace)

    # --- drift -------------------------------------------------------------------------------

    def drift_watched(self, ctx: TaskContext, step: StepResource) -> bool:
        """Whether drift of this Step's object is the controller's business right now."""
        if drift_policy_of(ctx, step) == "ignore" or step.spec.hook is not None:
            return False
        if step.metadata.deleting or step.status.phase in ("Deleting", "Pending"):
            return False
        digest = step_digest(step.spec)
        if step.status.applied_digest != digest or step.status.rejected_digest == digest:
            return False
        if not step.status.uid:
            return False
        return not is_job(step.spec.ref)

    def looks_drifted(
        self,
        ctx: TaskContext,
        step: StepResource,
        info: ResourceInfo,
        event_type: str,
        live: dict[str, Any],
    ) -> bool:
        """The cheap check, on a watch event: no request, may raise a false alarm."""
        if not self.drift_watched(ctx, step):
            return False
        if event_type == "DELETED":
            return True
        namespace = namespaced(info.namespaced, step.spec.ref, ctx.default_namespace)
        desired = self.desired(ctx, step, info, namespace)
        return bool(
            suspect_fields(
                desired,
                live,
                manager=task_field_manager(ctx.task),
                ignore_paths=ignore_paths_of(ctx, step),
            )
        )

    async def check_drift(
        self, ctx: TaskContext, step: StepResource, seen: dict[str, Any] | None = None
    ) -> StepResource:
        """Confirm a suspected drift, correct it if the policy says so, then record it.

        The least work between the watch event and the correcting apply: `seen` (the object as
        its watch just showed it) spares reading it again; drift that the managed fields prove
        (a value of ours changed and another manager now owns it) needs no dry-run to confirm;
        the Kubernetes Events are written after the correction, not before it.
        """
        if not self.drift_watched(ctx, step):
            return step
        info, namespace = await self.locate(ctx, step)
        desired = self.desired(ctx, step, info, namespace)
        live = (
            seen if seen is not None else await self.kube.get(info, step.spec.ref.name, namespace)
        )
        fields: list[str] = []
        policy = drift_policy_of(ctx, step)
        ignore_paths = ignore_paths_of(ctx, step)
        manager = task_field_manager(ctx.task)
        if live is not None:
            suspects = suspect_fields(desired, live, manager=manager, ignore_paths=ignore_paths)
            proven = proven_fields(desired, live, manager=manager, ignore_paths=ignore_paths)
            if proven:
                fields = proven
            elif suspects:
                manifest = respect_ignored(desired, live, ignore_paths)
                would_be = await self.kube.apply(
                    manifest,
                    field_manager=manager,
                    force=True,
                    dry_run=True,
                    info=info,
                )
                fields = confirmed_fields(manifest, would_be, live, ignore_paths=ignore_paths)
        now = self.clock()
        stamp = rfc3339(now)
        decision = decide_step_drift(
            step.status.drift,
            fields=fields,
            deleted=live is None,
            policy=policy,
            now=stamp,
        )
        involved = self._involved(step)
        what = describe_fields(fields, live is None)
        drift = decision.status
        correction_failed: KubeRejected | None = None
        if decision.correct:
            manifest = respect_ignored(desired, live, ignore_paths)
            try:
                await self.kube.apply(manifest, field_manager=manager, force=True, info=info)
            except KubeRejected as e:
                correction_failed = e
            else:
                drift = record_correction(drift, stamp)
        if decision.detected:
            log.info("drift on %s (Step %s): %s", step.spec.ref, step.metadata.name, what)
            await self.recorder.record(
                involved,
                event_type="Warning",
                reason="DriftDetected",
                message=f"{step.spec.ref}: {what} (policy {policy})",
                now=now,
            )
        if correction_failed is not None:
            await self.recorder.record(
                involved,
                event_type="Warning",
                reason="DriftCorrectionFailed",
                message=f"{step.spec.ref}: {correction_failed}",
                now=now,
            )
        elif decision.correct:
            await self.recorder.record(
                involved,
                event_type="Normal",
                reason="DriftCorrected",
                message=f"{step.spec.ref}: re-applied ({what})",
                now=now,
            )
        status = msgspec.structs.replace(
            step.status,
            drift=drift,
            conditions=_drift_condition(step.status, drift.state, what, stamp),
        )
        return await self.write_status(step, status)

    @staticmethod
    def _involved(step: StepResource) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "Step",
            "metadata": {
                "name": step.metadata.name,
                "namespace": step.metadata.namespace,
                "uid": step.metadata.uid,
            },
        }

    # --- removal -----------------------------------------------------------------------------

    async def remove(
        self,
        ctx: TaskContext,
        removals: Sequence[Removal],
        steps: dict[str, StepResource],
    ) -> list[str]:
        """Delete the objects of `removals` stage by stage (already in removal order).

        Returns the Steps still waiting for their object to go; a stage must be gone (or
        terminating) before the one before it is touched.
        """
        groups: list[list[Removal]] = []
        for removal in removals:
            key = (removal.phase, stage_of(removal.ref))
            if groups and (groups[-1][0].phase, stage_of(groups[-1][0].ref)) == key:
                groups[-1].append(removal)
            else:
                groups.append([removal])
        for group in groups:
            remaining = []
            for removal in group:
                step = steps.get(removal.name)
                if step is None:
                    continue
                if step.status.phase != "Deleting":
                    steps[removal.name] = step = await self.write_status(
                        step,
                        msgspec.structs.replace(
                            step.status,
                            phase="Deleting",
                            ready=False,
                            reason="Deleting",
                            message="removing the object",
                        ),
                    )
                if not await self._remove_one(ctx, step):
                    remaining.append(removal.name)
            if remaining:
                return remaining
        return []

    async def _remove_one(self, ctx: TaskContext, step: StepResource) -> bool:
        """Delete a Step's Job, its RBAC and its object; True once they are gone or going."""
        info, namespace = await self.locate(ctx, step)
        if step.spec.job is not None:
            job_namespace = namespace or ctx.default_namespace
            selector = f"{LABEL_STEP_JOB}={step.metadata.name}"
            for kind in (JOB, ROLE_BINDING, ROLE, SERVICE_ACCOUNT):
                listing = await self.kube.list(
                    kind, namespace=job_namespace, label_selector=selector
                )
                for item in listing.items:
                    await self.kube.delete(
                        kind, str(item["metadata"]["name"]), namespace=job_namespace
                    )
        live = await self.kube.get(info, step.spec.ref.name, namespace)
        if live is None:
            return True
        metadata = live.get("metadata") or {}
        if (metadata.get("labels") or {}).get(LABEL_STEP) != step.metadata.name:
            return True
        if keeps_object(step.spec.object, live) and not metadata.get("deletionTimestamp"):
            await self._let_go(info, step, namespace)
            return True
        if metadata.get("deletionTimestamp"):
            return not metadata.get("finalizers") or info.group != "fleetbus.io"
        await self.kube.delete(
            info,
            step.spec.ref.name,
            namespace=namespace,
            uid=str(metadata.get("uid") or ""),
        )
        after = await self.kube.get(info, step.spec.ref.name, namespace)
        if after is None:
            return True
        return bool((after.get("metadata") or {}).get("deletionTimestamp")) and (
            info.group != "fleetbus.io"
        )

    async def _let_go(self, info: ResourceInfo, step: StepResource, namespace: str) -> None:
        """Leave a kept object (`helm.sh/resource-policy: keep`) in the cluster, unowned: its
        fleetbus labels go, so no taskset claims it until one adopts it."""
        log.info(
            "keeping %s (resource-policy keep) as Step %s goes", step.spec.ref, step.metadata.name
        )
        with contextlib.suppress(NotFound):
            await self.kube.patch(
                info,
                step.spec.ref.name,
                {"metadata": {"labels": {label: None for label in OWNER_LABELS}}},
                namespace=namespace,
            )

    async def reset(self, step: StepResource) -> StepResource:
        """Forget that a Step was applied (its object was removed with its Tasklet)."""
        return await self.write_status(
            step,
            msgspec.structs.replace(
                step.status,
                phase="Pending",
                applied_digest="",
                completed_digest="",
                ready=False,
                reason="Removed",
                message="the object was removed",
                job=None,
            ),
        )


def _drift_condition(status: StepStatus, state: str, what: str, now: str) -> list[Condition]:
    return set_condition(
        status.conditions,
        Condition(
            type="Drifted",
            status="True" if state == "Drifted" else "False",
            reason=state,
            message=what if state != "InSync" else "",
        ),
        now,
    )
