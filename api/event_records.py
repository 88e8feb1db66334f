"""Events as the API shows them: one record per stored event, with secrets left out.

The log holds everything a cluster needs, including Secret objects inside taskset snapshots and
passwords inside Helm values. The API (and so the CLI and the dashboard, which only read the API)
never shows them: snapshot bodies are replaced by their size and digest, values under keys that
name a secret or shaped like one (`taskset.sensitive`) are masked, and patches of Secret objects
lose their data.

`concerns` decides whether an event is about a cluster or a taskset, for the `cluster=` and
`taskset=` filters of replay and of the live stream.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import msgspec

from events.catalog import (
    AntiEntropyRepaired,
    BlueprintAssigned,
    BlueprintPublished,
    BlueprintRolloutAdvanced,
    BlueprintRolloutHalted,
    BlueprintSyncForced,
    BlueprintUnassigned,
    ClusterCapabilitiesReported,
    ClusterDeregistered,
    ClusterDrainStarted,
    ClusterHealthChanged,
    ClusterLabelsChanged,
    ClusterRegistered,
    ClusterTaskHeld,
    ClusterTaskRefused,
    ClusterTaskScheduled,
    DataKeysShredded,
    DriftCorrected,
    DriftDetected,
    Event,
    EventsArchived,
    KeysRotated,
    OverrideRemoved,
    OverrideSet,
    Provenance,
    Report,
    RolloutAdvanced,
    RolloutHalted,
    RolloutResumed,
    SourceAdded,
    SourceFailed,
    SourceRemoved,
    TaskApplied,
    TaskFailed,
    TasksetDependenciesSet,
    TasksetPublished,
    TasksetRetired,
)
from events.store import StoredEvent
from taskset.sensitive import is_sensitive, sensitive_value

StreamName = Literal["events", "reports"]

REDACTED = "<redacted>"
ENVELOPE = frozenset({"id", "occurred_at", "actor", "correlation_id", "causation_id", "version"})


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event: where it sits in its stream, a line for people, and its payload."""

    stream: StreamName
    seq: int
    subject: str
    stored_at: datetime
    type: str
    summary: str
    event: dict[str, Any]


def redact_values(value: Any) -> Any:
    """`value` with every secret masked, at any depth: entries under a key that names a secret,
    and strings shaped like one wherever they sit (`taskset.sensitive`)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if is_sensitive(str(key), item) else redact_values(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_values(item) for item in value]
    if isinstance(value, str) and sensitive_value(value):
        return REDACTED
    return value


def redact_patches(patches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patches of Secret objects keep their target but lose their content."""
    shown: list[dict[str, Any]] = []
    for patch in patches:
        target = patch.get("target") or {}
        if isinstance(target, dict) and str(target.get("kind", "")).lower() == "secret":
            shown.append({"target": target, "patch": REDACTED})
        else:
            shown.append(redact_values(patch))
    return shown


def event_payload(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict, safe to show."""
    body: dict[str, Any] = msgspec.to_builtins(event)
    body["type"] = event.type_name
    if isinstance(event, TasksetPublished):
        body["body"] = f"<{event.body_size} bytes, digest {event.digest}>"
    if "values" in body:
        body["values"] = redact_values(body["values"])
    if isinstance(event, OverrideSet):
        body["patches"] = redact_patches(body.get("patches") or [])
    if isinstance(event, BlueprintPublished):
        body["entries"] = [
            {**entry, "values": redact_values(entry.get("values") or {})}
            for entry in body.get("entries") or []
        ]
    return body


def label_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def describe(event: Event) -> str:
    """One line saying what an event means, for people reading the log."""
    for kind in type(event).__mro__:
        summary = _SUMMARIES.get(kind)
        if summary is not None:
            return summary(event)
    fields = {
        name: getattr(event, name) for name in event.__struct_fields__ if name not in ENVELOPE
    }
    return " ".join(f"{k}={v}" for k, v in fields.items())


# --- one summary per event type (the most specific class of an event that has one wins) -----


def provenance_text(provenance: Provenance) -> str:
    """Where a version came from, in one phrase."""
    if provenance.kind == "git":
        where = f" {provenance.path}" if provenance.path else ""
        return f"git {provenance.url}{where} at {provenance.ref} ({provenance.commit[:12]})"
    return (
        f"{provenance.kind} {provenance.url} chart {provenance.chart} "
        f"{provenance.chart_version} ({provenance.digest[:19]})"
    )


def _describe_taskset_published(event: TasksetPublished) -> str:
    origin = f" from {provenance_text(event.provenance)}" if event.provenance else ""
    by_source = (
        f" by source {event.provenance.source}"
        if event.provenance and event.provenance.source
        else ""
    )
    return (
        f"{event.taskset} v{event.taskset_version} ({event.format}, {event.digest[:19]})"
        f"{origin}{by_source}"
    )


def _describe_source_added(event: SourceAdded) -> str:
    what = (
        f"git {event.url} {event.ref or 'HEAD'} {event.path}".rstrip()
        if event.kind == "git"
        else f"{event.kind} {event.url} {event.chart} {event.chart_version or 'latest'}"
    )
    return f"source {event.source} follows {what} into {event.taskset} every {event.interval_s:g}s"


def _describe_source_removed(event: SourceRemoved) -> str:
    return f"source {event.source} removed"


def _describe_source_failed(event: SourceFailed) -> str:
    return (
        f"source {event.source} failed ({event.stage}, attempt {event.attempts}): "
        f"{event.reason}; {event.taskset} keeps its version, retry in {event.retry_in_s:g}s"
    )


def _describe_override_set(event: OverrideSet) -> str:
    scope = f"cluster {event.cluster}" if event.cluster else f"selector {event.selector}"
    return f"{event.taskset}/{event.name} on {scope}"


def _describe_override_removed(event: OverrideRemoved) -> str:
    return f"{event.taskset}/{event.name} removed"


def _describe_taskset_retired(event: TasksetRetired) -> str:
    return f"{event.taskset} retired" + (f": {event.reason}" if event.reason else "")


def _describe_cluster_registered(event: ClusterRegistered) -> str:
    return f"{event.cluster} registered ({label_text(event.labels)})"


def _describe_cluster_labels_changed(event: ClusterLabelsChanged) -> str:
    return f"{event.cluster} labels now {label_text(event.labels)}"


def _describe_cluster_deregistered(event: ClusterDeregistered) -> str:
    return f"{event.cluster} deregistered"


def _describe_cluster_capabilities_reported(event: ClusterCapabilitiesReported) -> str:
    caps = event.capabilities
    return f"{event.cluster}: Kubernetes {caps.kube_version}, {len(caps.resources)} API kinds"


def _describe_cluster_drain_started(event: ClusterDrainStarted) -> str:
    return f"{event.cluster} draining: every taskset leaves it"


def _describe_anti_entropy_repaired(event: AntiEntropyRepaired) -> str:
    return f"{event.cluster}: re-sent {', '.join(event.tasksets) or 'nothing'}"


def _describe_rollout_resumed(event: RolloutResumed) -> str:
    return f"{event.taskset} v{event.taskset_version} rollout resumed"


def _describe_cluster_task_refused(event: ClusterTaskRefused) -> str:
    return f"{event.taskset} v{event.taskset_version} refused for {event.cluster}: {event.reason}"


def _describe_cluster_task_scheduled(event: ClusterTaskScheduled) -> str:
    if len(event.clusters) == 1:
        part = event.clusters[0]
        what = "removal" if part.removed else f"v{part.taskset_version}"
        return f"{event.taskset} {what} -> {part.cluster} (gen {part.generation})"
    versions = sorted({part.taskset_version for part in event.clusters if not part.removed})
    removals = sum(1 for part in event.clusters if part.removed)
    changes = [f"v{version}" for version in versions]
    if removals:
        changes.append(f"{removals} removal(s)")
    names = event.names()
    return (
        f"{event.taskset} {', '.join(changes)} -> {len(names)} clusters ({names[0]} … {names[-1]})"
    )


def _describe_rollout_advanced(event: RolloutAdvanced) -> str:
    return (
        f"{event.taskset} v{event.taskset_version} wave {event.wave + 1}/"
        f"{event.total_waves}: {', '.join(event.clusters)}"
    )


def _describe_rollout_halted(event: RolloutHalted) -> str:
    return (
        f"{event.taskset} v{event.taskset_version} halted at wave {event.wave + 1}: "
        f"{', '.join(event.failed)} failed" + (f" ({event.reason})" if event.reason else "")
    )


def _describe_task_applied(event: TaskApplied) -> str:
    what = "removed" if event.removed else f"applied v{event.taskset_version}"
    return (
        f"{event.cluster}: {event.taskset} {what} "
        f"({event.objects} objects, {event.duration_s:.1f}s)"
    )


def _describe_task_failed(event: TaskFailed) -> str:
    where = f" at {event.object}" if event.object else ""
    return (
        f"{event.cluster}: {event.taskset} v{event.taskset_version} failed{where}: {event.reason}"
    )


def _describe_drift_detected(event: DriftDetected) -> str:
    how = "deleted" if event.deleted else ", ".join(event.fields) or "changed"
    return f"{event.cluster}: {event.taskset} drift on {event.object} ({how})"


def _describe_drift_corrected(event: DriftCorrected) -> str:
    return f"{event.cluster}: {event.taskset} drift on {event.object} corrected"


def _describe_blueprint_published(event: BlueprintPublished) -> str:
    removed = f"; removed {', '.join(event.removed)}" if event.removed else ""
    return (
        f"blueprint {event.blueprint} v{event.blueprint_version}: "
        f"{', '.join(entry.taskset for entry in event.entries)}{removed}"
    )


def _describe_blueprint_assigned(event: BlueprintAssigned) -> str:
    pin = f", pinned to v{event.pinned_version}" if event.pinned_version else ""
    return f"{event.cluster} assigned to blueprint {event.blueprint}{pin}"


def _describe_blueprint_unassigned(event: BlueprintUnassigned) -> str:
    return f"{event.cluster} unassigned from blueprint {event.blueprint}"


def _describe_blueprint_sync_forced(event: BlueprintSyncForced) -> str:
    return f"blueprint {event.blueprint}: sync of {event.cluster} forced"


def _describe_blueprint_rollout_advanced(event: BlueprintRolloutAdvanced) -> str:
    return (
        f"blueprint {event.blueprint} v{event.blueprint_version} wave {event.wave + 1}/"
        f"{event.total_waves}: {', '.join(event.clusters)}"
    )


def _describe_blueprint_rollout_halted(event: BlueprintRolloutHalted) -> str:
    return (
        f"blueprint {event.blueprint} v{event.blueprint_version} halted: "
        f"{', '.join(event.failed)} ({event.reason})"
    )


def _describe_cluster_task_held(event: ClusterTaskHeld) -> str:
    return (
        f"{event.taskset} v{event.taskset_version} held on {event.cluster}: "
        f"{event.hold}, {event.reason}"
    )


def _describe_taskset_dependencies_set(event: TasksetDependenciesSet) -> str:
    return f"{event.taskset} depends on {', '.join(event.depends_on) or 'nothing'}"


def _describe_keys_rotated(event: KeysRotated) -> str:
    kek = (
        f"new KEK {event.kek} ({event.rewrapped} data keys re-wrapped)"
        if event.previous_kek
        else ""
    )
    keys = f"{len(event.data_keys)} new data key(s)" if event.data_keys else ""
    return "keys rotated: " + ", ".join(part for part in (kek, keys) if part)


def _describe_data_keys_shredded(event: DataKeysShredded) -> str:
    reason = f" ({event.reason})" if event.reason else ""
    return f"{len(event.key_ids)} data key(s) of {event.scope} shredded{reason}"


def _describe_events_archived(event: EventsArchived) -> str:
    return (
        f"events {event.from_seq}..{event.to_seq} archived in segment {event.segment} "
        f"({event.segment_hash[:19]}…)"
    )


def _describe_report(event: Report) -> str:
    return f"{event.cluster}: {event.taskset} v{event.taskset_version}"


def _describe_cluster_health_changed(event: ClusterHealthChanged) -> str:
    state = "healthy again" if event.healthy else "unhealthy"
    return (
        f"{event.cluster} {state}: {event.reason}" if event.reason else f"{event.cluster} {state}"
    )


_SUMMARIES: dict[type[Event], Callable[[Any], str]] = {
    TasksetPublished: _describe_taskset_published,
    OverrideSet: _describe_override_set,
    OverrideRemoved: _describe_override_removed,
    TasksetRetired: _describe_taskset_retired,
    ClusterRegistered: _describe_cluster_registered,
    ClusterLabelsChanged: _describe_cluster_labels_changed,
    ClusterDeregistered: _describe_cluster_deregistered,
    ClusterDrainStarted: _describe_cluster_drain_started,
    ClusterCapabilitiesReported: _describe_cluster_capabilities_reported,
    ClusterHealthChanged: _describe_cluster_health_changed,
    AntiEntropyRepaired: _describe_anti_entropy_repaired,
    RolloutResumed: _describe_rollout_resumed,
    ClusterTaskRefused: _describe_cluster_task_refused,
    ClusterTaskScheduled: _describe_cluster_task_scheduled,
    RolloutAdvanced: _describe_rollout_advanced,
    RolloutHalted: _describe_rollout_halted,
    TaskApplied: _describe_task_applied,
    TaskFailed: _describe_task_failed,
    DriftDetected: _describe_drift_detected,
    DriftCorrected: _describe_drift_corrected,
    Report: _describe_report,
    BlueprintPublished: _describe_blueprint_published,
    BlueprintAssigned: _describe_blueprint_assigned,
    BlueprintUnassigned: _describe_blueprint_unassigned,
    BlueprintSyncForced: _describe_blueprint_sync_forced,
    BlueprintRolloutAdvanced: _describe_blueprint_rollout_advanced,
    BlueprintRolloutHalted: _describe_blueprint_rollout_halted,
    ClusterTaskHeld: _describe_cluster_task_held,
    TasksetDependenciesSet: _describe_taskset_dependencies_set,
    SourceAdded: _describe_source_added,
    SourceRemoved: _describe_source_removed,
    SourceFailed: _describe_source_failed,
    KeysRotated: _describe_keys_rotated,
    DataKeysShredded: _describe_data_keys_shredded,
    EventsArchived: _describe_events_archived,
}


def event_record(
    stream: StreamName, stored: StoredEvent, cluster: str | None = None
) -> EventRecord:
    """The stored event as a record; asked about one `cluster`, an event that names a chunk of
    clusters shows that cluster's part only."""
    event = narrowed(stored.event, cluster)
    return EventRecord(
        stream=stream,
        seq=stored.seq,
        subject=stored.subject,
        stored_at=stored.stored_at,
        type=event.type_name,
        summary=describe(event),
        event=event_payload(event),
    )


def narrowed(event: Event, cluster: str | None) -> Event:
    """`event` as far as it concerns `cluster` (None: all of it)."""
    if cluster is None or not isinstance(event, ClusterTaskScheduled):
        return event
    part = event.entry(cluster)
    if part is None:
        return event
    return msgspec.structs.replace(event, clusters=[part])


def event_clusters(event: Event) -> frozenset[str]:
    """The clusters an event is about: its cluster, a rollout wave's clusters, a halt's failed
    clusters (empty for events about no cluster in particular)."""
    match event:
        case RolloutAdvanced() | BlueprintRolloutAdvanced():
            return frozenset(event.clusters)
        case RolloutHalted() | BlueprintRolloutHalted():
            return frozenset(event.failed)
        case ClusterTaskScheduled():
            return frozenset(event.names())
    cluster = getattr(event, "cluster", None)
    return frozenset({cluster}) if isinstance(cluster, str) and cluster else frozenset()


def concerns(
    event: Event,
    *,
    cluster: str | None,
    taskset: str | None,
    among: frozenset[str] | None = None,
) -> bool:
    """Whether `event` is about `cluster`, about one of the clusters `among` (those a label
    selector matched) and about `taskset` (a None filter matches all)."""
    if taskset is not None and getattr(event, "taskset", None) != taskset:
        return False
    if cluster is None and among is None:
        return True
    clusters = event_clusters(event)
    if cluster is not None and cluster not in clusters:
        return False
    return among is None or not clusters.isdisjoint(among)
