"""The port between the connector and whatever applies ClusterTasks to a cluster.

Two executors implement it: the Kubernetes executor (a Task CR per ClusterTask, reconciled by
the cluster controller) and the in-memory simulator (`simulator.executor`) that backs
scale tests and `fleetbus up --sim-clusters`. The connector knows nothing else about them.

Contract:
- `apply(task)` brings the cluster to `task` (phases init, install, postInstall in order) and
  returns when it is done, or raises `ApplyFailed` naming the phase and object. It is
  idempotent: applying what is already applied changes nothing and succeeds.
- `remove(task)` runs the taskset's preDelete phase, then deletes its objects; removing what
  is not there succeeds.
- `inventory()` says what is applied, per taskset, and digests the live objects.
- `controller_status()` judges the health of whatever applies for it (the cluster
  controller's replicas, from their heartbeats), or None when nothing separate does (the
  simulator).
- `drift()` yields every observed divergence of a live object from what was applied (edited
  fields or deletion), forever; the connector decides whether to correct it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec

from events.inventory import ControllerStatus
from taskset.capabilities import ClusterCapabilities
from taskset.model import ClusterTask, DriftPolicy


class ApplyResult(msgspec.Struct, frozen=True, kw_only=True):
    objects: int
    """Objects the taskset has on the cluster after the operation (0 after a removal)."""
    duration_s: float = 0.0


class AppliedTask(msgspec.Struct, frozen=True, kw_only=True):
    """A ClusterTask as the executor last applied it."""

    generation: int
    digest: str
    version: int = 0
    objects: int = 0


class ExecutorInventory(msgspec.Struct, frozen=True, kw_only=True):
    applied: dict[str, AppliedTask]
    """Applied ClusterTasks, by taskset name."""
    live_digest: str
    """Digest of the live objects the executor manages (what the cluster really runs)."""
    objects: int
    capabilities: ClusterCapabilities | None = None
    """What the cluster's apiserver offers (server version, API kinds and scopes), if known."""


class DriftObserved(msgspec.Struct, frozen=True, kw_only=True):
    """A live object no longer matches what its taskset applied."""

    taskset: str
    object: str
    """`Kind/namespace/name`, as `taskset.model.ObjectRef` prints it."""
    fields: list[str] = msgspec.field(default_factory=list)
    """JSON pointers of the fields that differ (empty when `deleted`)."""
    deleted: bool = False
    policy: DriftPolicy | None = None
    """The object's own drift policy, when it has one (else the taskset's applies)."""
    ignore_paths: list[str] = msgspec.field(default_factory=list)
    """The object's own ignore paths, beside the taskset's."""
    observation: str
    """Identifies this observation (e.g. the object's resourceVersion), so one observation
    reported twice yields one event."""
    observed_at: datetime


@runtime_checkable
class Executor(Protocol):
    async def apply(self, task: ClusterTask) -> ApplyResult: ...

    async def remove(self, task: ClusterTask) -> ApplyResult: ...

    async def inventory(self) -> ExecutorInventory: ...

    async def controller_status(self) -> ControllerStatus | None:
        """The cluster controller's health, judged from its heartbeats now (None: this
        executor has no separate controller)."""
        ...

    def drift(self) -> AsyncIterator[DriftObserved]: ...

    async def close(self) -> None: ...
