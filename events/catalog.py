"""The event catalog: every fact fleetbus records, as frozen, keyword-only msgspec Structs.

Each event is tagged on the wire by its stable `type` name and carries the envelope fields of
`Event`. Events are past-tense facts and never change once written; a breaking change to one
bumps its `version` default and registers an upcaster in `events.codec`.

Each event belongs to one aggregate (taskset, override, cluster, schedule, rollout, report); its
subject `fleet.evt.<aggregate>.<id>` (reports: `fleet.report.<cluster>.<taskset>`) is the unit of
optimistic concurrency on the log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec

from events import subjects
from taskset.blueprints import BlueprintEntry
from taskset.capabilities import ClusterCapabilities
from taskset.projects import ProjectQuotas


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """The envelope every event carries."""

    id: str
    """UUIDv7: sortable by creation time; also the `Nats-Msg-Id` that makes appends idempotent."""
    occurred_at: datetime
    actor: str
    """Who caused it: `user:<token name>`, `scheduler`, `cluster:<name>`, ..."""
    correlation_id: str = ""
    """Shared by every event that one user command led to, however indirectly."""
    causation_id: str = ""
    """The id of the event (or command) that directly caused this one."""
    version: int = 1

    aggregate: ClassVar[str]

    @property
    def aggregate_id(self) -> str:
        raise TypeError(f"{type(self).__name__} is not a concrete event")

    @property
    def subject(self) -> str:
        return subjects.event_subject(self.aggregate, self.aggregate_id)

    @property
    def type_name(self) -> str:
        return str(type(self).__struct_config__.tag)


# --- shared payload parts ---------------------------------------------------------------------


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    """Where a taskset goes: explicit clusters, and/or a Kubernetes-style label selector."""

    clusters: list[str] = msgspec.field(default_factory=list)
    selector: str = ""


class RolloutStrategy(msgspec.Struct, frozen=True, kw_only=True):
    """How a new version spreads: in waves of `batch_size` clusters (0 = all at once).

    `max_unavailable` caps clusters that are updating at once (0 = no cap beyond the batch);
    `pause_seconds` waits between waves; more than `failure_threshold` failed clusters in a
    rollout halts it.
    """

    batch_size: int = 0
    max_unavailable: int = 0
    pause_seconds: float = 0.0
    failure_threshold: int = 0


class Provenance(msgspec.Struct, frozen=True, kw_only=True):
    """Where a published version came from, when the hub fetched it from a remote source.

    `kind` is `helm-repo` (a Helm HTTP repository), `oci` (a chart in an OCI registry) or
    `git` (a directory of a Git repository). Charts carry their name, the version chosen and the
    digest of the archive (for OCI, the manifest digest the registry answered with); Git
    sources carry the ref asked for, the commit it resolved to and the directory taken.
    `source` names the standing source that published it ("" for a one-off publish).
    """

    kind: Literal["helm-repo", "oci", "git"]
    url: str
    chart: str = ""
    chart_version: str = ""
    digest: str = ""
    ref: str = ""
    commit: str = ""
    path: str = ""
    source: str = ""


# --- taskset aggregate ------------------------------------------------------------------------


class TasksetPublished(Event, tag="TasksetPublished", frozen=True, kw_only=True):
    """An immutable snapshot of a taskset: version N of its normalized body."""

    aggregate: ClassVar[str] = "taskset"
    taskset: str
    taskset_version: int
    digest: str
    """Canonical digest of the normalized Taskset."""
    source_digest: str
    format: Literal["helm", "kustomize", "yaml"]
    body: bytes
    """The normalized Taskset, canonical JSON compressed with zlib (see `taskset.codec`)."""
    body_size: int
    placement: Placement = msgspec.field(default_factory=Placement)
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    """Helm values the snapshot was rendered with (empty for other formats)."""
    chart_archive: str = ""
    """Content address of the chart archive in the hub's object store, for re-rendering."""
    provenance: Provenance | None = None
    """The remote source it was fetched from; None for an upload."""
    rollback_of: int = 0
    """The version this snapshot re-publishes (`fleetbus rollback`); its event is the cause."""

    @property
    def aggregate_id(self) -> str:
        return self.taskset


class TasksetRetired(Event, tag="TasksetRetired", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "taskset"
    taskset: str
    reason: str = ""

    @property
    def aggregate_id(self) -> str:
        return self.taskset


class TasksetDependenciesSet(Event, tag="TasksetDependenciesSet", frozen=True, kw_only=True):
    """A taskset published on its own waits, on each cluster, for these tasksets to be Ready.

    Recorded apart from `TasksetPublished` so that dependencies can change without a new
    snapshot; an empty list removes them."""

    aggregate: ClassVar[str] = "taskset"
    taskset: str
    depends_on: list[str] = msgspec.field(default_factory=list)

    @property
    def aggregate_id(self) -> str:
        return self.taskset


# --- source aggregate ------------------------------------------------------------------------


class SourceAdded(Event, tag="SourceAdded", frozen=True, kw_only=True):
    """A standing source: the hub checks it every `interval_s` seconds (and on demand) and
    publishes each new chart version within `chart_version` or each new commit of `ref` as the next
    version of `taskset`, with this placement, rollout, namespace and values.

    Adding a source of the same name again replaces its definition. Credentials are named
    (`credentials`), never carried: the hub keeps them in its data dir."""

    aggregate: ClassVar[str] = "source"
    source: str
    taskset: str
    kind: Literal["helm-repo", "oci", "git"]
    url: str
    chart: str = ""
    chart_version: str = ""
    """A chart version or semver constraint (`^1.2`); empty: the latest."""
    ref: str = ""
    path: str = ""
    namespace: str = "default"
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    placement: Placement = msgspec.field(default_factory=Placement)
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    interval_s: float = 300.0
    credentials: str = ""
    plain_http: bool = False

    @property
    def aggregate_id(self) -> str:
        return self.source


class SourceRemoved(Event, tag="SourceRemoved", frozen=True, kw_only=True):
    """The hub stops checking the source; what it published stays published."""

    aggregate: ClassVar[str] = "source"
    source: str

    @property
    def aggregate_id(self) -> str:
        return self.source


class SourceFailed(Event, tag="SourceFailed", frozen=True, kw_only=True):
    """Checking a standing source failed: unreachable, refused by a limit or the host
    allow-list, or its new version does not render. The version published last stays; the hub
    tries again after `retry_in_s` (growing with each failure up to the source's interval).
    Recorded once per distinct reason until the source succeeds again."""

    aggregate: ClassVar[str] = "source"
    source: str
    taskset: str
    reason: str
    stage: Literal["fetch", "limits", "render", "publish"] = "fetch"
    attempts: int = 1
    """Failed checks in a row, this one included."""
    retry_in_s: float = 0.0
    candidate: str = ""
    """What was being fetched when known: `chart 1.2.4` or `commit <sha>`."""

    @property
    def aggregate_id(self) -> str:
        return self.source


# --- blueprint aggregate ----------------------------------------------------------------------


class BlueprintPublished(Event, tag="BlueprintPublished", frozen=True, kw_only=True):
    """An immutable version of a blueprint, its base already folded into `entries`."""

    aggregate: ClassVar[str] = "blueprint"
    blueprint: str
    blueprint_version: int
    digest: str
    """Canonical digest of entries, selector, drift policy and rollout."""
    entries: list[BlueprintEntry]
    selector: str = ""
    drift_policy: Literal["", "correct", "report", "ignore"] = ""
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    base: str = ""
    base_version: int = 0
    removed: list[str] = msgspec.field(default_factory=list)
    """Entries of the previous version this one no longer has (for the audit log)."""

    @property
    def aggregate_id(self) -> str:
        return self.blueprint


class BlueprintAssigned(Event, tag="BlueprintAssigned", frozen=True, kw_only=True):
    """A cluster gets the blueprint whatever its labels; `pinned_version` > 0 pins it there."""

    aggregate: ClassVar[str] = "blueprint"
    blueprint: str
    cluster: str
    pinned_version: int = 0

    @property
    def aggregate_id(self) -> str:
        return f"{self.blueprint}.{self.cluster}"


class BlueprintUnassigned(Event, tag="BlueprintUnassigned", frozen=True, kw_only=True):
    """The explicit assignment (and pin) of a cluster ends; the selector alone decides again."""

    aggregate: ClassVar[str] = "blueprint"
    blueprint: str
    cluster: str

    @property
    def aggregate_id(self) -> str:
        return f"{self.blueprint}.{self.cluster}"


class BlueprintSyncForced(Event, tag="BlueprintSyncForced", frozen=True, kw_only=True):
    """Every entry of the blueprint is sent to the cluster again, as a new generation."""

    aggregate: ClassVar[str] = "blueprint"
    blueprint: str
    cluster: str

    @property
    def aggregate_id(self) -> str:
        return f"{self.blueprint}.{self.cluster}"


class BlueprintRolloutAdvanced(Event, tag="BlueprintRolloutAdvanced", frozen=True, kw_only=True):
    """A wave of clusters starts running a blueprint version (the wave's whole stack)."""

    aggregate: ClassVar[str] = "blueprint-rollout"
    blueprint: str
    blueprint_version: int
    wave: int
    total_waves: int
    clusters: list[str]

    @property
    def aggregate_id(self) -> str:
        return self.blueprint


class BlueprintRolloutHalted(Event, tag="BlueprintRolloutHalted", frozen=True, kw_only=True):
    """More clusters failed a blueprint version than its rollout tolerates: no new wave starts
    until the next version is published."""

    aggregate: ClassVar[str] = "blueprint-rollout"
    blueprint: str
    blueprint_version: int
    wave: int
    failed: list[str]
    reason: str = ""

    @property
    def aggregate_id(self) -> str:
        return self.blueprint


# --- override aggregate -----------------------------------------------------------------------


class OverrideSet(Event, tag="OverrideSet", frozen=True, kw_only=True):
    """A per-cluster or per-selector customisation of a taskset: Helm values or patches.

    Each patch is `{"target": {"kind", "namespace", "name"}, "mergePatch": {...}}` (RFC 7386)
    or `{"target": ..., "jsonPatch": [...]}` (RFC 6902).
    """

    aggregate: ClassVar[str] = "override"
    taskset: str
    name: str
    cluster: str = ""
    selector: str = ""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    patches: list[dict[str, Any]] = msgspec.field(default_factory=list)
    sensitive: list[str] = msgspec.field(default_factory=list)
    """Dotted paths of `values` the user marked secret (sealed whatever their key or shape)."""

    @property
    def aggregate_id(self) -> str:
        return f"{self.taskset}.{self.name}"


class OverrideRemoved(Event, tag="OverrideRemoved", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "override"
    taskset: str
    name: str

    @property
    def aggregate_id(self) -> str:
        return f"{self.taskset}.{self.name}"


# --- cluster aggregate ------------------------------------------------------------------------


class ClusterRegistered(Event, tag="ClusterRegistered", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "cluster"
    cluster: str
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    certificate_fingerprint: str = ""

    @property
    def aggregate_id(self) -> str:
        return self.cluster


class ClusterLabelsChanged(Event, tag="ClusterLabelsChanged", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "cluster"
    cluster: str
    labels: dict[str, str]

    @property
    def aggregate_id(self) -> str:
        return self.cluster


class ClusterDrainStarted(Event, tag="ClusterDrainStarted", frozen=True, kw_only=True):
    """Every taskset is to leave the cluster (running preDelete), ahead of its deregistration;
    no taskset is placed on it any more."""

    aggregate: ClassVar[str] = "cluster"
    cluster: str

    @property
    def aggregate_id(self) -> str:
        return self.cluster


class ClusterCapabilitiesReported(
    Event, tag="ClusterCapabilitiesReported", frozen=True, kw_only=True
):
    """What a cluster's apiserver offers (server version, API kinds and scopes), as its edge
    reported it; recorded when it differs from what the hub knew. Charts that consult
    `.Capabilities` are rendered for it."""

    aggregate: ClassVar[str] = "cluster"
    cluster: str
    capabilities: ClusterCapabilities
    digest: str

    @property
    def aggregate_id(self) -> str:
        return self.cluster


class ClusterHealthChanged(Event, tag="ClusterHealthChanged", frozen=True, kw_only=True):
    """A cluster's health as the hub hears it changed, and stayed changed for a while: it went
    silent (no inventory digest within the liveness window) or came back, or its connector or
    its cluster controller turned not ready or ready again. Recorded by the hub from the
    inventory digests (which are not logged themselves), so notifications can tell someone."""

    aggregate: ClassVar[str] = "cluster"
    cluster: str
    healthy: bool
    connected: bool
    edge_ready: bool | None = None
    """The connector's readiness in its last digest (None: not told)."""
    controller_ready: bool | None = None
    """The cluster controller's readiness in the last digest (None: no controller, as for a
    simulated cluster, or not told)."""
    reason: str = ""
    """What is wrong, in words (or what is well again)."""
    last_seen: datetime | None = None
    """When the hub last heard from the cluster."""

    @property
    def aggregate_id(self) -> str:
        return self.cluster


class ClusterDeregistered(Event, tag="ClusterDeregistered", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "cluster"
    cluster: str

    @property
    def aggregate_id(self) -> str:
        return self.cluster


class AntiEntropyRepaired(Event, tag="AntiEntropyRepaired", frozen=True, kw_only=True):
    """The hub found a cluster's inventory digest differing from its desired state, re-sent it."""

    aggregate: ClassVar[str] = "cluster"
    cluster: str
    tasksets: list[str]
    edge_digest: str = ""
    hub_digest: str = ""

    @property
    def aggregate_id(self) -> str:
        return self.cluster


# --- project aggregate ------------------------------------------------------------------------


class ProjectCreated(Event, tag="ProjectCreated", frozen=True, kw_only=True):
    """A project (tenant) was created. The `default` project exists without one."""

    aggregate: ClassVar[str] = "project"
    project: str
    description: str = ""
    quotas: ProjectQuotas = msgspec.field(default_factory=ProjectQuotas)

    @property
    def aggregate_id(self) -> str:
        return self.project


class ProjectQuotasSet(Event, tag="ProjectQuotasSet", frozen=True, kw_only=True):
    """A project's quotas changed; they bind what is created from now on."""

    aggregate: ClassVar[str] = "project"
    project: str
    quotas: ProjectQuotas

    @property
    def aggregate_id(self) -> str:
        return self.project


class ProjectSharesSet(Event, tag="ProjectSharesSet", frozen=True, kw_only=True):
    """What a project shares with every other project, read-only (full names): other projects
    see these tasksets and blueprints and may build their blueprints on them."""

    aggregate: ClassVar[str] = "project"
    project: str
    tasksets: list[str] = msgspec.field(default_factory=list)
    blueprints: list[str] = msgspec.field(default_factory=list)

    @property
    def aggregate_id(self) -> str:
        return self.project


# --- keys aggregate ---------------------------------------------------------------------------

KEYS_AGGREGATE_ID = "hub"


class KeysRotated(Event, tag="KeysRotated", frozen=True, kw_only=True):
    """The hub's keys were rotated: a new key-encryption key and/or new data keys.

    Ids only, never key material. Old data keys stay in the keyring, so everything they sealed
    stays readable."""

    aggregate: ClassVar[str] = "keys"
    kek: str
    previous_kek: str = ""
    data_keys: list[str] = msgspec.field(default_factory=list)
    """Ids of the data keys new envelopes are now sealed with."""
    rewrapped: int = 0
    """Data keys wrapped again under the new key-encryption key."""

    @property
    def aggregate_id(self) -> str:
        return KEYS_AGGREGATE_ID


class DataKeysShredded(Event, tag="DataKeysShredded", frozen=True, kw_only=True):
    """Every data key of a scope was destroyed: what they sealed can never be read again,
    though the log that holds it still replays."""

    aggregate: ClassVar[str] = "keys"
    scope: str
    key_ids: list[str]
    cluster: str = ""
    reason: str = ""

    @property
    def aggregate_id(self) -> str:
        return KEYS_AGGREGATE_ID


# --- archive aggregate ------------------------------------------------------------------------

ARCHIVE_AGGREGATE_ID = "events"


class EventsArchived(Event, tag="EventsArchived", frozen=True, kw_only=True):
    """Events `from_seq`..`to_seq` of the log were written to archive segment `segment`.

    `segment_hash` is the hash of that segment (which covers `previous_hash`, the hash of the
    segment before it): this event links the live log to the archive's hash chain. The events
    leave the live log only after this is recorded (see `events.archive`)."""

    aggregate: ClassVar[str] = "archive"
    segment: int
    from_seq: int
    to_seq: int
    first_time: datetime | None = None
    last_time: datetime | None = None
    events: int = 0
    segment_hash: str
    previous_hash: str
    raw_bytes: int = 0
    stored_bytes: int = 0

    @property
    def aggregate_id(self) -> str:
        return ARCHIVE_AGGREGATE_ID


# --- schedule and rollout aggregates ----------------------------------------------------------


class ScheduledCluster(msgspec.Struct, frozen=True, kw_only=True):
    """One cluster's part of a `ClusterTaskScheduled`: the desired state written for it."""

    cluster: str
    taskset_version: int
    generation: int
    digest: str
    wave: int = 0
    removed: bool = False
    overrides: list[str] = msgspec.field(default_factory=list)


class ClusterTaskScheduled(Event, tag="ClusterTaskScheduled", frozen=True, kw_only=True):
    """The scheduler wrote new desired states of one taskset for a chunk of clusters.

    One decision over a taskset writes one event per chunk of up to `SCHEDULE_CHUNK` clusters,
    each cluster with its own generation and digest: at fleet scale, one append per cluster was
    most of the scheduler's time. Version 1 named one cluster per event; the codec upcasts it to
    a chunk of one, so old logs fold as they always did."""

    aggregate: ClassVar[str] = "schedule"
    taskset: str
    clusters: list[ScheduledCluster]
    caused_by: list[str] = msgspec.field(default_factory=list)
    """Ids of the events that led to this decision."""
    version: int = 2

    @property
    def aggregate_id(self) -> str:
        return self.taskset

    def entry(self, cluster: str) -> ScheduledCluster | None:
        """The part of this event about `cluster`, if it names it (the last, if twice)."""
        found = None
        for scheduled in self.clusters:
            if scheduled.cluster == cluster:
                found = scheduled
        return found

    def names(self) -> list[str]:
        return [scheduled.cluster for scheduled in self.clusters]


SCHEDULE_CHUNK = 512
"""Most clusters one `ClusterTaskScheduled` names (about 80 KB of JSON at 512)."""


class ClusterTaskRefused(Event, tag="ClusterTaskRefused", frozen=True, kw_only=True):
    """The scheduler could not write a new desired state of a taskset for one cluster.

    The cluster keeps what it had. Typical reasons: the result of the overrides is over the
    payload limit, or an override no longer applies to the published version.
    """

    aggregate: ClassVar[str] = "schedule"
    cluster: str
    taskset: str
    taskset_version: int
    reason: str
    input_digest: str = ""
    """Identifies what was refused (version and override revisions), so it is refused once."""
    size: int = 0
    limit: int = 0
    overrides: list[str] = msgspec.field(default_factory=list)
    caused_by: list[str] = msgspec.field(default_factory=list)

    @property
    def aggregate_id(self) -> str:
        return f"{self.taskset}.{self.cluster}"


class ClusterTaskHeld(Event, tag="ClusterTaskHeld", frozen=True, kw_only=True):
    """The scheduler holds a taskset's new desired state on a cluster until its dependencies
    are applied and Ready there.

    `Waiting`: a dependency is on its way (scheduled, not yet reported Ready). `Blocked`: a
    dependency failed, or is not placed on the cluster at all; it needs someone to act. The
    cluster keeps what it had. Recorded once per distinct reason."""

    aggregate: ClassVar[str] = "schedule"
    cluster: str
    taskset: str
    taskset_version: int
    hold: Literal["Waiting", "Blocked"]
    reason: str
    dependencies: list[str] = msgspec.field(default_factory=list)
    """The dependencies not yet Ready."""
    blueprint: str = ""
    caused_by: list[str] = msgspec.field(default_factory=list)

    @property
    def aggregate_id(self) -> str:
        return f"{self.taskset}.{self.cluster}"


class RolloutAdvanced(Event, tag="RolloutAdvanced", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "rollout"
    taskset: str
    taskset_version: int
    wave: int
    total_waves: int
    clusters: list[str]

    @property
    def aggregate_id(self) -> str:
        return self.taskset


class RolloutHalted(Event, tag="RolloutHalted", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "rollout"
    taskset: str
    taskset_version: int
    wave: int
    failed: list[str]
    reason: str = ""

    @property
    def aggregate_id(self) -> str:
        return self.taskset


class RolloutResumed(Event, tag="RolloutResumed", frozen=True, kw_only=True):
    aggregate: ClassVar[str] = "rollout"
    taskset: str
    taskset_version: int

    @property
    def aggregate_id(self) -> str:
        return self.taskset


# --- reports from clusters (REPORTS stream) ---------------------------------------------------


class Report(Event, frozen=True, kw_only=True):
    """A fact observed on a cluster about one of its ClusterTasks."""

    aggregate: ClassVar[str] = "report"
    cluster: str
    taskset: str
    taskset_version: int = 0
    generation: int = 0
    digest: str = ""

    @property
    def aggregate_id(self) -> str:
        return f"{self.cluster}.{self.taskset}"

    @property
    def subject(self) -> str:
        return subjects.report_subject(self.cluster, self.taskset)


class TaskApplied(Report, tag="TaskApplied", frozen=True, kw_only=True):
    objects: int = 0
    removed: bool = False
    """True when this reports a completed removal (preDelete ran, objects deleted)."""
    duration_s: float = 0.0


class TaskFailed(Report, tag="TaskFailed", frozen=True, kw_only=True):
    phase: str = ""
    object: str = ""
    reason: str = ""


class DriftDetected(Report, tag="DriftDetected", frozen=True, kw_only=True):
    object: str
    fields: list[str] = msgspec.field(default_factory=list)
    deleted: bool = False
    policy: Literal["correct", "report", "ignore"] = "correct"


class DriftCorrected(Report, tag="DriftCorrected", frozen=True, kw_only=True):
    object: str
    fields: list[str] = msgspec.field(default_factory=list)


HubEvent = (
    TasksetPublished
    | TasksetRetired
    | OverrideSet
    | OverrideRemoved
    | ClusterRegistered
    | ClusterLabelsChanged
    | ClusterDeregistered
    | ClusterDrainStarted
    | ClusterCapabilitiesReported
    | ClusterHealthChanged
    | AntiEntropyRepaired
    | ClusterTaskScheduled
    | ClusterTaskRefused
    | RolloutAdvanced
    | RolloutHalted
    | RolloutResumed
    | TasksetDependenciesSet
    | BlueprintPublished
    | BlueprintAssigned
    | BlueprintUnassigned
    | BlueprintSyncForced
    | BlueprintRolloutAdvanced
    | BlueprintRolloutHalted
    | ClusterTaskHeld
    | SourceAdded
    | SourceRemoved
    | SourceFailed
    | KeysRotated
    | DataKeysShredded
    | EventsArchived
    | ProjectCreated
    | ProjectQuotasSet
    | ProjectSharesSet
)
ReportEvent = TaskApplied | TaskFailed | DriftDetected | DriftCorrected
AnyEvent = HubEvent | ReportEvent

EVENT_TYPES: dict[str, type[Event]] = {
    str(cls.__struct_config__.tag): cls
    for cls in (
        TasksetPublished,
        TasksetRetired,
        OverrideSet,
        OverrideRemoved,
        ClusterRegistered,
        ClusterLabelsChanged,
        ClusterDeregistered,
        ClusterDrainStarted,
        ClusterCapabilitiesReported,
        ClusterHealthChanged,
        AntiEntropyRepaired,
        ClusterTaskScheduled,
        ClusterTaskRefused,
        RolloutAdvanced,
        RolloutHalted,
        RolloutResumed,
        TasksetDependenciesSet,
        BlueprintPublished,
        BlueprintAssigned,
        BlueprintUnassigned,
        BlueprintSyncForced,
        BlueprintRolloutAdvanced,
        BlueprintRolloutHalted,
        ClusterTaskHeld,
        SourceAdded,
        SourceRemoved,
        SourceFailed,
        KeysRotated,
        DataKeysShredded,
        EventsArchived,
        ProjectCreated,
        ProjectQuotasSet,
        ProjectSharesSet,
        TaskApplied,
        TaskFailed,
        DriftDetected,
        DriftCorrected,
    )
}
