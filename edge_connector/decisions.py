"""What the connector does about a desired ClusterTask, a drift observation or an outcome: pure.

No I/O and no clock here: the service passes `now` and what the executor reports, and gets
back an action or the report events to append. The events' ids are derived from what they
report (cluster, taskset, generation, digest, observation) plus their time, so the same
observation produces the same id and a retried append is stored once (`Nats-Msg-Id` = id).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from edge_connector.errors import ApplyFailed
from edge_connector.executor import AppliedTask, ApplyResult, DriftObserved, ExecutorInventory
from events.catalog import DriftCorrected, DriftDetected, Report, TaskApplied, TaskFailed
from events.inventory import InventoryDigest, TasksetState, desired_state_digest
from kube_contract.drift import judge_drift
from taskset.model import ClusterTask

Action = Literal["apply", "remove", "none"]

MAX_RETRY_DELAY = 60.0


def plan_task(task: ClusterTask, applied: AppliedTask | None) -> Action:
    """Apply what differs from what runs; remove a tombstoned taskset that still runs."""
    if task.removed:
        return "remove" if applied is not None else "none"
    if applied is not None and (applied.generation, applied.digest) == (
        task.generation,
        task.digest,
    ):
        return "none"
    return "apply"


def retry_delay(attempt: int, base: float = 1.0) -> float:
    """Backoff before re-applying a ClusterTask that failed `attempt` times in a row."""
    return float(min(base * 2 ** max(attempt - 1, 0), MAX_RETRY_DELAY))


def report_id(key: str, at: datetime) -> str:
    """A UUIDv7 whose time is `at` and whose other bits are a hash of `key`: deterministic."""
    ms = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(hashlib.sha256(key.encode()).digest()[:10], "big")
    value = ms << 80
    value |= 0x7 << 76
    value |= (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def actor_of(cluster: str) -> str:
    return f"cluster:{cluster}"


def _task_key(kind: str, task: ClusterTask) -> str:
    return f"{kind}|{task.cluster}|{task.taskset_name}|{task.generation}|{task.digest}"


def applied_event(
    task: ClusterTask, result: ApplyResult, now: datetime, *, causation_id: str = ""
) -> TaskApplied:
    return TaskApplied(
        id=report_id(_task_key("applied" if not task.removed else "removed", task), now),
        occurred_at=now,
        actor=actor_of(task.cluster),
        causation_id=causation_id,
        cluster=task.cluster,
        taskset=task.taskset_name,
        taskset_version=task.version,
        generation=task.generation,
        digest=task.digest,
        objects=result.objects,
        removed=task.removed,
        duration_s=round(result.duration_s, 6),
    )


def failed_event(
    task: ClusterTask, failure: ApplyFailed, now: datetime, *, attempt: int = 1
) -> TaskFailed:
    key = f"{_task_key('failed', task)}|{attempt}|{failure.phase}|{failure.object}"
    return TaskFailed(
        id=report_id(key, now),
        occurred_at=now,
        actor=actor_of(task.cluster),
        cluster=task.cluster,
        taskset=task.taskset_name,
        taskset_version=task.version,
        generation=task.generation,
        digest=task.digest,
        phase=failure.phase,
        object=failure.object,
        reason=failure.reason,
    )


@dataclass(frozen=True)
class DriftReport:
    events: list[Report]
    correct: bool
    """Re-apply the ClusterTask now (then report `DriftCorrected`)."""


def decide_drift_report(task: ClusterTask | None, observed: DriftObserved) -> DriftReport:
    """Report drift as the object's policy (else the taskset's) judges it
    (`kube_contract.drift.judge_drift`); correct it when the policy says so."""
    if task is None or task.removed or task.taskset is None:
        return DriftReport([], False)
    policy = observed.policy or task.taskset.drift_policy
    verdict = judge_drift(
        policy,
        fields=observed.fields,
        deleted=observed.deleted,
        ignore_paths=[*task.taskset.ignore_paths, *observed.ignore_paths],
    )
    if not verdict.drifted:
        return DriftReport([], False)
    detected = DriftDetected(
        id=report_id(f"drift|{task.cluster}|{observed.observation}", observed.observed_at),
        occurred_at=observed.observed_at,
        actor=actor_of(task.cluster),
        cluster=task.cluster,
        taskset=task.taskset_name,
        taskset_version=task.version,
        generation=task.generation,
        digest=task.digest,
        object=observed.object,
        fields=verdict.fields,
        deleted=observed.deleted,
        policy=policy,
    )
    return DriftReport([detected], verdict.correct)


def corrected_event(
    task: ClusterTask, observed: DriftObserved, detected_id: str, now: datetime
) -> DriftCorrected:
    return DriftCorrected(
        id=report_id(f"corrected|{task.cluster}|{observed.observation}", now),
        occurred_at=now,
        actor=actor_of(task.cluster),
        causation_id=detected_id,
        cluster=task.cluster,
        taskset=task.taskset_name,
        taskset_version=task.version,
        generation=task.generation,
        digest=task.digest,
        object=observed.object,
        fields=list(observed.fields),
    )


def state_of(task: ClusterTask) -> TasksetState:
    return TasksetState(generation=task.generation, digest=task.digest, removed=task.removed)


CAPABILITIES_RESEND_EVERY = 10
"""Inventory digests between two that carry the full capabilities although they did not change
(digests travel by core NATS: one may be lost)."""


def inventory_digest(
    cluster: str,
    held: Mapping[str, ClusterTask],
    inventory: ExecutorInventory,
    now: datetime,
    *,
    with_capabilities: bool = True,
) -> InventoryDigest:
    """What the edge holds and runs; the full capabilities only `with_capabilities`
    (`send_capabilities` decides), their digest always."""
    desired = {name: state_of(task) for name, task in sorted(held.items())}
    caps = inventory.capabilities
    applied = {
        name: TasksetState(generation=a.generation, digest=a.digest)
        for name, a in sorted(inventory.applied.items())
    }
    return InventoryDigest(
        cluster=cluster,
        sent_at=now,
        desired=desired,
        desired_digest=desired_state_digest(desired),
        applied=applied,
        live_digest=inventory.live_digest,
        objects=inventory.objects,
        capabilities_digest=caps.digest if caps is not None else "",
        capabilities=caps if with_capabilities else None,
    )


def send_capabilities(digest: str, last_sent: str, digests_since: int) -> bool:
    """Whether this inventory digest carries the full capabilities: when they changed since
    the last sent, and every `CAPABILITIES_RESEND_EVERY` digests."""
    return bool(digest) and (digest != last_sent or digests_since >= CAPABILITIES_RESEND_EVERY)
