"""What to do next with a set of Steps: apply which, wait for which, delete which, in what order.

Reconcilers compute a plan here from what they observed and then carry it out elsewhere (the
split Rancher Fleet's `desiredset/plan.go` makes), so every ordering rule is a pure function with
table tests.

Ordering rules:

* Phases run in order: init, install, postInstall (preDelete only on removal), each a barrier.
* Inside a phase, objects that are not Helm hooks come first, then hooks by weight, lowest
  first, one weight after another (`hooks.order_key`), as Helm runs them.
* Inside each of those groups, Steps go in stages, as Flux applies: definitions first (CRDs,
  Namespaces, fleetbus Namespaces, ClusterRoles), then `*Class` kinds, then everything else.
  A stage is applied as a whole and the next starts only once every Step of it is ready, so a custom
  resource always waits for its CRD to be Established and a Deployment for its Namespace.
* Inside a stage, objects are applied in the shared install order (`taskset.ordering`, Helm's
  `kind_sorter.go`), ties kept in the order the taskset lists them. Removal goes the exact
  reverse way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from cluster_controller.kstatus import Readiness
from taskset.model import ObjectRef, Phase
from taskset.ordering import install_rank as kind_install_rank

STAGE_DEFINITIONS = 0
STAGE_CLASSES = 1
STAGE_WORKLOADS = 2

_DEFINITION_KINDS = frozenset({"CustomResourceDefinition", "Namespace", "ClusterRole"})

RUN_PHASES: tuple[Phase, ...] = ("init", "install", "postInstall")


def install_rank(ref: ObjectRef) -> int:
    """The install position of a kind (`taskset.ordering`, after Helm's); unknown kinds last.

    Inside a stage it is Helm's order: the one place the shared order departs from Helm's
    (CRDs right after Namespaces) falls in the definitions stage, where it changes nothing.
    """
    return kind_install_rank(ref.kind)


def stage_of(ref: ObjectRef) -> int:
    """The stage a Step's object is applied in; a fleetbus Namespace counts as a Namespace."""
    if ref.kind in _DEFINITION_KINDS and ref.group in (
        "",
        "apiextensions.k8s.io",
        "rbac.authorization.k8s.io",
        "fleetbus.io",
    ):
        return STAGE_DEFINITIONS
    if ref.kind.endswith("Class"):
        return STAGE_CLASSES
    return STAGE_WORKLOADS


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    """What a reconciler knows about one Step when it plans.

    `readiness` is None when the object has not been read in this pass; the plan then asks for
    it to be read (`PhasePlan.read`) before deciding anything about that Step.
    """

    name: str
    ref: ObjectRef
    digest: str
    """Digest of the Step's spec as it is now."""
    applied_digest: str = ""
    """Digest of the spec last applied (from the Step's status)."""
    completed_digest: str = ""
    """Digest of the spec whose work last finished: a completed Job is not re-run."""
    readiness: Readiness | None = None
    missing: bool = False
    """The Step resource itself does not exist (yet): the phase cannot finish."""
    order: tuple[int, int] = (0, 0)
    """The group the Step runs in: (0, 0) for objects, (1, weight) for hooks."""

    @property
    def done(self) -> bool:
        if self.completed_digest and self.completed_digest == self.digest:
            return True
        return (
            self.applied_digest == self.digest
            and self.readiness is not None
            and self.readiness.current
        )

    @property
    def needs_apply(self) -> bool:
        if self.done:
            return False
        return self.applied_digest != self.digest or (
            self.readiness is not None and self.readiness.status == "NotFound"
        )

    @property
    def needs_read(self) -> bool:
        return not self.done and not self.needs_apply and self.readiness is None

    @property
    def failed(self) -> bool:
        return (
            not self.done
            and self.applied_digest == self.digest
            and self.readiness is not None
            and self.readiness.failed
        )


class Blocked(msgspec.Struct, frozen=True, kw_only=True):
    """A Step a phase cannot get past, and why; `message` names the object first."""

    step: str
    reason: str
    message: str
    object: str = ""


class PhasePlan(msgspec.Struct, frozen=True, kw_only=True):
    """The next moves in one phase.

    `read` lists Steps whose object must be read before deciding; `apply` the Steps to apply
    now, in order. `waiting` lists Steps the phase waits for; `failed` the Steps that failed
    (the phase stops there). `complete` means every Step is done. A plan with nothing to read or
    apply is settled: only a change in the cluster can move it on.
    """

    read: list[str] = msgspec.field(default_factory=list)
    apply: list[str] = msgspec.field(default_factory=list)
    waiting: list[Blocked] = msgspec.field(default_factory=list)
    failed: list[Blocked] = msgspec.field(default_factory=list)
    complete: bool = False
    stage: int = 0

    @property
    def settled(self) -> bool:
        return not self.read and not self.apply


def apply_order(steps: Sequence[StepState]) -> list[StepState]:
    """Steps sorted by stage, then Helm install order; ties keep the taskset's order."""
    indexed = list(enumerate(steps))
    indexed.sort(
        key=lambda pair: (
            pair[1].order,
            stage_of(pair[1].ref),
            install_rank(pair[1].ref),
            pair[0],
        )
    )
    return [step for _, step in indexed]


def group_of(step: StepState) -> tuple[int, int, int]:
    """The barrier a Step belongs to: its hook group, then its stage."""
    return (*step.order, stage_of(step.ref))


def _blocked(step: StepState, default_reason: str, default_message: str) -> Blocked:
    readiness = step.readiness
    reason = readiness.reason if readiness is not None and readiness.reason else default_reason
    message = readiness.message if readiness is not None and readiness.message else default_message
    return Blocked(
        step=step.name,
        reason=reason,
        message=f"{step.ref}: {message}",
        object=str(step.ref),
    )


def plan_phase(steps: Sequence[StepState]) -> PhasePlan:
    """Which Steps of one phase to read or apply now, and what the phase is waiting for.

    Groups (hook weight, then stage) run one after another: a group is applied whole, and the
    plan never reaches past a group that is not done. A failed Step stops the phase where it is.
    """
    ordered = apply_order(steps)
    groups = sorted({group_of(s) for s in ordered})
    for group in groups:
        stage = group[-1]
        members = [s for s in ordered if group_of(s) == group]
        missing = [s for s in members if s.missing]
        if missing:
            return PhasePlan(
                waiting=[
                    Blocked(
                        step=s.name,
                        reason="StepMissing",
                        message=f"Step {s.name} not found",
                    )
                    for s in missing
                ],
                stage=stage,
            )
        read = [s.name for s in members if s.needs_read]
        apply = [s.name for s in members if s.needs_apply]
        failed = [_blocked(s, "Failed", "failed") for s in members if s.failed]
        if failed:
            return PhasePlan(read=read, apply=apply, failed=failed, stage=stage)
        waiting = [
            _blocked(s, "NotReady", "not ready yet")
            for s in members
            if not s.done and not s.needs_apply and not s.needs_read
        ]
        if read or apply or waiting:
            return PhasePlan(read=read, apply=apply, waiting=waiting, stage=stage)
    return PhasePlan(complete=True, stage=groups[-1][-1] if groups else 0)


class Removal(msgspec.Struct, frozen=True, kw_only=True):
    """A Step whose object is to be deleted, in the order returned."""

    name: str
    ref: ObjectRef
    phase: Phase


def removal_order(steps: Iterable[Removal]) -> list[Removal]:
    """The exact reverse of the install order: last phase, last stage, last kind first."""
    phase_rank = {"init": 0, "install": 1, "postInstall": 2, "preDelete": 3}
    indexed = list(enumerate(steps))
    indexed.sort(
        key=lambda pair: (
            phase_rank[pair[1].phase],
            stage_of(pair[1].ref),
            install_rank(pair[1].ref),
            pair[0],
        ),
        reverse=True,
    )
    return [step for _, step in indexed]


def plan_prune(wanted: Iterable[str], existing: Iterable[Removal]) -> list[Removal]:
    """Steps that exist for a Task but are no longer part of it, in removal order."""
    keep = set(wanted)
    return removal_order(step for step in existing if step.name not in keep)


def progress_text(ready: int, total: int) -> str:
    return f"{ready}/{total}"
