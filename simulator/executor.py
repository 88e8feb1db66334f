"""An in-memory cluster behind the executor port: the same phase logic, no Kubernetes.

It exists for scale (hundreds of simulated clusters in one process for `fleetbus up
--sim-clusters N` and the benchmarks), never instead of the real Kubernetes path in tests. It
applies a ClusterTask's phases in order (init, install, postInstall; preDelete on removal),
keeps every object it applied with the label naming its taskset, prunes objects a new version
no longer has, and lets a test inject what real clusters do: failures of a given step, edits
of live objects, deletions. Injected edits and deletions come out of `drift()` like a watch
would report them.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_connector.errors import ApplyFailed
from edge_connector.executor import (
    AppliedTask,
    ApplyResult,
    DriftObserved,
    ExecutorInventory,
)
from simulator.errors import SimulationError
from taskset.digest import digest_of
from taskset.model import ClusterTask, ObjectRef, Phase, Step

TASKSET_LABEL = "fleetbus.io/taskset"
APPLY_PHASES: tuple[Phase, ...] = ("init", "install", "postInstall")
HISTORY_LIMIT = 1_000
"""Step records a simulated cluster keeps. Each apply adds one per step: unbounded, a worker of
2,500 sims gained 20,000 records per update for as long as the hub ran, and every full garbage
collection walked them all."""


@dataclass
class FailureRule:
    taskset: str
    phase: str | None
    object: str | None
    reason: str
    times: int


@dataclass(frozen=True)
class StepRecord:
    """One thing the simulator did, in order: what a test checks phase ordering against."""

    taskset: str
    generation: int
    phase: str
    object: str
    action: str
    """`apply`, `job` (a step's Job ran to completion), `run` (a preDelete hook), `delete`."""


@dataclass
class LiveObject:
    manifest: dict[str, Any]
    taskset: str
    resource_version: int


def _key(manifest: dict[str, Any]) -> str:
    return str(ObjectRef.of(manifest))


def _labelled(manifest: dict[str, Any], taskset: str) -> dict[str, Any]:
    """The object as applied: the manifest with its taskset's label added.

    Only the path to the labels is copied; the rest is shared with the desired state, so an
    apply costs no deep copy per object (with thousands of simulated clusters in one process
    that copy was most of an apply). Nothing changes a live object in place but `edit`, which
    copies it first."""
    metadata = dict(manifest.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), TASKSET_LABEL: taskset}
    return {**manifest, "metadata": metadata}


def _pointer_tokens(pointer: str) -> list[str]:
    if not pointer.startswith("/"):
        raise SimulationError(f"not a JSON pointer: {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _set_pointer(document: dict[str, Any], pointer: str, value: Any) -> None:
    tokens = _pointer_tokens(pointer)
    target: Any = document
    for token in tokens[:-1]:
        target = target[int(token)] if isinstance(target, list) else target.setdefault(token, {})
    if isinstance(target, list):
        target[int(tokens[-1])] = value
    else:
        target[tokens[-1]] = value


@dataclass
class SimExecutor:
    """An in-memory cluster. All methods are safe to call from one event loop."""

    name: str = "sim"
    step_delay: float = 0.0
    """Seconds each step takes (0: instant); lets tests observe an apply in progress."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    objects: dict[str, LiveObject] = field(default_factory=dict)
    applied: dict[str, AppliedTask] = field(default_factory=dict)
    history: list[StepRecord] = field(default_factory=list)
    history_limit: int = HISTORY_LIMIT
    """The most records `history` keeps: past it, the older half is dropped."""
    _failures: list[FailureRule] = field(default_factory=list)
    _drift: asyncio.Queue[DriftObserved] = field(default_factory=asyncio.Queue)
    _version: int = 0

    # --- the executor port --------------------------------------------------------------------

    async def apply(self, task: ClusterTask) -> ApplyResult:
        started = time.monotonic()
        if task.taskset is None:
            raise ApplyFailed(phase="init", object="-", reason="ClusterTask carries no taskset")
        wanted: set[str] = set()
        for phase in APPLY_PHASES:
            for step in task.taskset.phase(phase):
                await self._run_step(task, phase, step)
                wanted.add(_key(step.object))
        for key in sorted(self._owned(task.taskset_name) - wanted, reverse=True):
            self._delete(task, "install", key)
        self.applied[task.taskset_name] = AppliedTask(
            generation=task.generation,
            digest=task.digest,
            version=task.version,
            objects=len(wanted),
        )
        return ApplyResult(objects=len(wanted), duration_s=time.monotonic() - started)

    async def remove(self, task: ClusterTask) -> ApplyResult:
        started = time.monotonic()
        current = self.applied.get(task.taskset_name)
        if current is not None and task.taskset is not None:
            for step in task.taskset.pre_delete:
                self._check_failure(task.taskset_name, "preDelete", step)
                await self._pause()
                self._record(
                    StepRecord(
                        task.taskset_name, task.generation, "preDelete", str(step.ref), "run"
                    )
                )
        for key in sorted(self._owned(task.taskset_name), reverse=True):
            self._delete(task, "preDelete", key)
        self.applied.pop(task.taskset_name, None)
        return ApplyResult(objects=0, duration_s=time.monotonic() - started)

    async def controller_status(self) -> None:
        """A simulated cluster has no controller apart from this executor."""
        return None

    async def inventory(self) -> ExecutorInventory:
        live = {key: obj.manifest for key, obj in sorted(self.objects.items())}
        return ExecutorInventory(
            applied=dict(self.applied), live_digest=digest_of(live), objects=len(live)
        )

    async def drift(self) -> AsyncGenerator[DriftObserved, None]:
        while True:
            yield await self._drift.get()

    async def close(self) -> None:
        return None

    # --- what tests and the simulated fleet inject ---------------------------------------------

    def fail(
        self,
        taskset: str,
        *,
        phase: str | None = None,
        object: str | None = None,
        reason: str = "injected failure",
        times: int = 1,
    ) -> None:
        """Make the next `times` matching steps of `taskset` fail."""
        self._failures.append(FailureRule(taskset, phase, object, reason, times))

    def edit(self, object: str, pointer: str, value: Any) -> DriftObserved:
        """Change a live object the way `kubectl edit` would; reported as drift."""
        live = self._live(object)
        # The live object shares its parts with the desired state (`_labelled`): copy it
        # before the edit, or the edit would change what the cluster was asked to hold.
        live.manifest = copy.deepcopy(live.manifest)
        _set_pointer(live.manifest, pointer, value)
        live.resource_version = self._next_version()
        observed = DriftObserved(
            taskset=live.taskset,
            object=object,
            fields=[pointer],
            observation=f"{object}@{live.resource_version}",
            observed_at=self.clock(),
        )
        self._drift.put_nowait(observed)
        return observed

    def delete(self, object: str) -> DriftObserved:
        """Delete a live object behind the executor's back; reported as drift."""
        live = self._live(object)
        del self.objects[object]
        observed = DriftObserved(
            taskset=live.taskset,
            object=object,
            deleted=True,
            observation=f"{object}@deleted-{self._next_version()}",
            observed_at=self.clock(),
        )
        self._drift.put_nowait(observed)
        return observed

    def wipe(self) -> None:
        """Forget everything: a cluster rebuilt from scratch."""
        self.objects.clear()
        self.applied.clear()

    def owned_objects(self, taskset: str) -> list[str]:
        return sorted(self._owned(taskset))

    # --- internals -------------------------------------------------------------------------------

    def _owned(self, taskset: str) -> set[str]:
        return {key for key, obj in self.objects.items() if obj.taskset == taskset}

    def _live(self, object: str) -> LiveObject:
        try:
            return self.objects[object]
        except KeyError as e:
            raise SimulationError(
                f"no live object {object} on simulated cluster {self.name}"
            ) from e

    def _record(self, record: StepRecord) -> None:
        self.history.append(record)
        if len(self.history) > self.history_limit:
            del self.history[: len(self.history) - self.history_limit // 2]

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    async def _pause(self) -> None:
        if self.step_delay > 0:
            await asyncio.sleep(self.step_delay)

    def _check_failure(self, taskset: str, phase: str, step: Step) -> None:
        ref = str(step.ref)
        for rule in self._failures:
            if rule.taskset != taskset or rule.times <= 0:
                continue
            if rule.phase is not None and rule.phase != phase:
                continue
            if rule.object is not None and rule.object != ref:
                continue
            rule.times -= 1
            raise ApplyFailed(phase=phase, object=ref, reason=rule.reason)

    async def _run_step(self, task: ClusterTask, phase: str, step: Step) -> None:
        self._check_failure(task.taskset_name, phase, step)
        await self._pause()
        key = _key(step.object)
        manifest = _labelled(step.object, task.taskset_name)
        existing = self.objects.get(key)
        if (
            existing is None
            or existing.manifest != manifest
            or existing.taskset != task.taskset_name
        ):
            self.objects[key] = LiveObject(manifest, task.taskset_name, self._next_version())
        self._record(StepRecord(task.taskset_name, task.generation, phase, key, "apply"))
        if step.job is not None:
            self._record(
                StepRecord(task.taskset_name, task.generation, phase, _key(step.job), "job")
            )

    def _delete(self, task: ClusterTask, phase: str, key: str) -> None:
        self.objects.pop(key, None)
        self._record(StepRecord(task.taskset_name, task.generation, phase, key, "delete"))
