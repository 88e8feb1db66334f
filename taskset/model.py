"""The Taskset: every packaging format (Helm, Kustomize, plain YAML) normalized into one shape.

A Taskset is a named bundle of Kubernetes objects slotted into four ordered phases. It is what
publishing snapshots and what a cluster ultimately applies; a ClusterTask is one Taskset version
with the overrides for one cluster folded in.

Field names on the wire are camelCase, like the Kubernetes objects they carry.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Phase = Literal["init", "install", "postInstall", "preDelete"]
PHASES: tuple[Phase, ...] = ("init", "install", "postInstall", "preDelete")

WaitPolicy = Literal["ready", "none", "complete"]
DriftPolicy = Literal["correct", "report", "ignore"]


class ObjectRef(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """Identity of a Kubernetes object: `kind` plus namespace/name, with the API group."""

    api_version: str = msgspec.field(name="apiVersion")
    kind: str
    name: str
    namespace: str = ""

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> ObjectRef:
        metadata = manifest.get("metadata") or {}
        return cls(
            api_version=str(manifest.get("apiVersion", "")),
            kind=str(manifest.get("kind", "")),
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace") or ""),
        )

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


class HookInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a Helm hook annotation said about the object, kept for the executor."""

    events: list[str] = msgspec.field(default_factory=list)
    weight: int = 0
    delete_policy: list[str] = msgspec.field(default_factory=list, name="deletePolicy")


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One operation on one Kubernetes object: server-side apply `object`, then wait.

    `job` is an optional Job manifest that works on the object once it is applied.
    """

    object: dict[str, Any]
    job: dict[str, Any] | None = None
    wait: WaitPolicy = "ready"
    hook: HookInfo | None = None
    drift_policy: DriftPolicy | None = msgspec.field(default=None, name="driftPolicy")
    """This object's own drift policy; None follows the taskset's."""
    ignore_paths: list[str] = msgspec.field(default_factory=list, name="ignorePaths")
    """JSON pointers drift detection leaves alone on this object, beside the taskset's."""
    adopt: bool = False
    """Take this object over if it exists already, unmanaged or owned by another taskset."""

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef.of(self.object)


class SourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Where a Taskset came from, so a snapshot can be traced and re-rendered."""

    format: Literal["helm", "kustomize", "yaml"]
    digest: str
    chart_name: str = msgspec.field(default="", name="chartName")
    chart_version: str = msgspec.field(default="", name="chartVersion")
    values_digest: str = msgspec.field(default="", name="valuesDigest")
    chart_archive: str = msgspec.field(default="", name="chartArchive")
    """Content address of the Helm chart archive kept on the hub ("sha256:<hex>"), if any."""
    consults: list[str] = msgspec.field(default_factory=list)
    """What a chart's templates read that differs per cluster (`taskset.capabilities.Consulted`):
    the scheduler renders it per cluster context only then."""


class Taskset(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    namespace: str = ""
    init: list[Step] = msgspec.field(default_factory=list)
    install: list[Step] = msgspec.field(default_factory=list)
    post_install: list[Step] = msgspec.field(default_factory=list, name="postInstall")
    pre_delete: list[Step] = msgspec.field(default_factory=list, name="preDelete")
    source: SourceInfo | None = None
    drift_policy: DriftPolicy = msgspec.field(default="correct", name="driftPolicy")
    ignore_paths: list[str] = msgspec.field(default_factory=list, name="ignorePaths")
    """JSON pointers (e.g. `/spec/replicas`) that drift detection leaves alone."""
    adopt: bool = False
    """Take over objects that exist already (unmanaged, or owned by another taskset) instead of
    failing with a conflict naming their owner."""
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    """The user's taskset spec (`fleetbus.yaml` and publish fields) as given, so a chart
    re-rendered with one cluster's values gets the same settings again."""

    def phase(self, phase: Phase) -> list[Step]:
        match phase:
            case "init":
                return self.init
            case "install":
                return self.install
            case "postInstall":
                return self.post_install
            case "preDelete":
                return self.pre_delete

    def steps(self) -> list[tuple[Phase, Step]]:
        return [(phase, step) for phase in PHASES for step in self.phase(phase)]


class ClusterTask(msgspec.Struct, frozen=True, kw_only=True):
    """The desired state of one Taskset on one cluster: snapshot ⊕ that cluster's overrides.

    `generation` grows by one every time the scheduler rewrites it for the cluster; `digest`
    is the canonical digest of `taskset` (after overrides), so equal digests mean equal work.
    A ClusterTask with `removed=True` is a tombstone: run preDelete, then delete the objects.
    """

    cluster: str
    taskset_name: str = msgspec.field(name="tasksetName")
    version: int
    generation: int
    digest: str
    taskset: Taskset | None = None
    removed: bool = False
    wave: int = 0
    overrides: list[str] = msgspec.field(default_factory=list)
