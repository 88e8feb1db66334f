"""Snapshots of the scheduler's fold: what replaying EVENTS up to a sequence gives, kept.

A snapshot covers EVENTS up to `events_seq` (stored at `events_time`) and REPORTS up to
`reports_seq`. It is written in parts so that each reader takes only what it needs:

- `placement`: clusters, tasksets with every version, overrides, dependencies, blueprints and
  rollouts — everything the history fold reads (`scheduler.history`);
- `decisions`: what the scheduler last wrote per (cluster, taskset), generations, refusals,
  holds, reports, the subjects' last sequences and the causes not yet answered — what the
  scheduler needs on top to decide;
- one `ClusterHistory` per cluster: the ClusterTasks in force, as a full replay recomputes
  them (generation, version, sequence, time, verified flag and problem), their content
  referenced by digest and kept once per snapshot (`contents`).

So a scheduler restarts from `placement` + `decisions` and `state --at T` reads `placement`,
one cluster's history and the contents it names, then folds only the events after the
snapshot. Everything here is pure (no I/O); `scheduler.snapshot_store` keeps the parts in
JetStream. Parts are msgpack; every part carries `SNAPSHOT_SCHEMA`, and a part of another
schema, or one that does not decode, makes the whole snapshot unusable (`SnapshotUnreadable`):
its readers then take the next older snapshot or replay from the start.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from events.catalog import BlueprintPublished, Placement, Provenance, RolloutStrategy
from scheduler.errors import SchedulerError
from scheduler.history import HistoricalTask, HistoryFold
from scheduler.ports import ChartRenderer
from scheduler.state import (
    BlueprintRecord,
    RefusalRecord,
    ReportRecord,
    RolloutRecord,
    ScheduledRecord,
    SchedulerState,
    SnapshotRecord,
    TasksetRecord,
)
from sealing.envelope import DataKeys, cluster_scope, is_sealed_bytes, open_bytes, seal_bytes
from taskset.capabilities import ClusterCapabilities
from taskset.codec import CorruptPayload, decode_taskset, encode_taskset
from taskset.errors import FleetbusError
from taskset.model import ClusterTask
from taskset.overrides import Override

SNAPSHOT_SCHEMA = 1
"""Bumped whenever a part's layout changes: snapshots of another schema are skipped."""


class SnapshotUnreadable(SchedulerError):
    """A snapshot part that does not decode, fails its checksum, or has another schema."""


# --- the parts -----------------------------------------------------------------------------


class VersionEntry(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    digest: str
    format: str
    body: bytes
    values: dict[str, Any]
    chart_archive: str
    placement: Placement
    rollout: RolloutStrategy


class TasksetEntry(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    latest: int
    retired: bool
    versions: list[VersionEntry]


class BlueprintEntry(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    latest: int
    tasksets: list[str]
    versions: list[BlueprintPublished]


class RolloutEntry(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    """The taskset (or blueprint) the rollout belongs to."""
    version: int
    waves: list[list[str]]
    halted: bool
    resumed_at: datetime | None


class ScheduledEntry(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    cluster: str
    version: int
    generation: int
    digest: str
    removed: bool
    overrides: list[str]
    wave: int


class RefusalEntry(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    taskset: str
    version: int
    input_digest: str
    at: datetime


class ReportEntry(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    taskset: str
    failed: bool
    version: int
    generation: int
    removed: bool
    at: datetime


class PlacementPart(msgspec.Struct, frozen=True, kw_only=True):
    schema: int
    events_seq: int
    clusters: dict[str, dict[str, str]]
    deregistered: list[str]
    tasksets: list[TasksetEntry]
    overrides: list[Override]
    taskset_dependencies: dict[str, list[str]]
    rollouts: list[RolloutEntry]
    blueprints: list[BlueprintEntry]
    blueprint_assignments: list[tuple[str, str, int]]
    blueprint_rollouts: list[RolloutEntry]
    blueprint_started: list[tuple[str, int, list[str]]]
    blueprint_reached: list[tuple[str, str, int]]
    draining: list[str] = msgspec.field(default_factory=list)
    releases: list[tuple[str, str, int, int]] = msgspec.field(default_factory=list)
    """(cluster, taskset, version delivered, release revision)."""
    capabilities: dict[str, ClusterCapabilities] = msgspec.field(default_factory=dict)


class DecisionsPart(msgspec.Struct, frozen=True, kw_only=True):
    schema: int
    reports_seq: int
    scheduled: list[ScheduledEntry]
    generations: list[tuple[str, str, int]]
    refused: list[RefusalEntry]
    held: list[tuple[str, str, str, str]]
    forced: list[tuple[str, str]]
    reports: list[ReportEntry]
    subject_seqs: dict[str, int]
    causes: dict[str, list[tuple[str, str]]]
    last_cause: dict[str, tuple[str, str]]
    global_causes: list[tuple[str, str]]
    resealed: list[tuple[str, str]] = msgspec.field(default_factory=list)
    """(cluster, taskset) pairs whose DESIRED message must be sealed again (a shredded key)."""
    shredded: int = 0


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    generation: int
    digest: str
    content: str
    """Digest of the recomputed content (a key of the snapshot's contents), "" for none."""
    wave: int
    overrides: list[str]
    scheduled_at: datetime
    seq: int
    verified: bool
    problem: str
    provenance: Provenance | None = None
    """Where the version came from, when the hub fetched it from a remote source."""
    content_digest: str = ""
    """The recomputed content's own digest when `content` names it otherwise (sealed)."""


class ClusterHistory(msgspec.Struct, frozen=True, kw_only=True):
    schema: int
    cluster: str
    tasks: list[HistoryEntry]


@dataclass(frozen=True)
class SnapshotParts:
    """A snapshot ready to store: its parts encoded, the contents by digest."""

    events_seq: int
    events_time: datetime
    reports_seq: int
    placement: bytes
    decisions: bytes
    histories: dict[str, bytes]
    """cluster -> its encoded `ClusterHistory`."""
    contents: dict[str, bytes]
    """content digest -> the content, as `taskset.codec.encode_taskset` writes it."""


_encoder = msgspec.msgpack.Encoder()
_digest_encoder = msgspec.msgpack.Encoder(order="deterministic")
_placement_decoder = msgspec.msgpack.Decoder(PlacementPart)
_decisions_decoder = msgspec.msgpack.Decoder(DecisionsPart)
_history_decoder = msgspec.msgpack.Decoder(ClusterHistory)


def pack(part: msgspec.Struct) -> bytes:
    return zlib.compress(_encoder.encode(part), 1)


def _unpack(data: bytes, decoder: msgspec.msgpack.Decoder[Any], what: str) -> Any:
    try:
        part = decoder.decode(zlib.decompress(data))
    except (zlib.error, msgspec.DecodeError, RecursionError) as e:
        raise SnapshotUnreadable(f"{what} does not decode: {e}") from e
    if part.schema != SNAPSHOT_SCHEMA:
        raise SnapshotUnreadable(
            f"{what} has schema {part.schema}, this scheduler reads {SNAPSHOT_SCHEMA}"
        )
    return part


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- state -> parts --------------------------------------------------------------------------


def _rollout_entry(key: str, record: RolloutRecord) -> RolloutEntry:
    return RolloutEntry(
        key=key,
        version=record.version,
        waves=[list(wave) for wave in record.waves],
        halted=record.halted,
        resumed_at=record.resumed_at,
    )


def placement_part(state: SchedulerState) -> PlacementPart:
    return PlacementPart(
        schema=SNAPSHOT_SCHEMA,
        events_seq=state.events_seq,
        clusters={name: dict(labels) for name, labels in state.clusters.items()},
        deregistered=sorted(state.deregistered),
        tasksets=[
            TasksetEntry(
                name=name,
                latest=record.latest,
                retired=record.retired,
                versions=[
                    VersionEntry(
                        version=v.version,
                        digest=v.digest,
                        format=v.format,
                        body=v.body,
                        values=v.values,
                        chart_archive=v.chart_archive,
                        placement=v.placement,
                        rollout=v.rollout,
                    )
                    for v in record.versions.values()
                ],
            )
            for name, record in state.tasksets.items()
        ],
        overrides=[o for by_name in state.overrides.values() for o in by_name.values()],
        taskset_dependencies={k: list(v) for k, v in state.taskset_dependencies.items()},
        rollouts=[_rollout_entry(k, r) for k, r in state.rollouts.items()],
        blueprints=[
            BlueprintEntry(
                name=name,
                latest=record.latest,
                tasksets=sorted(record.tasksets),
                versions=list(record.versions.values()),
            )
            for name, record in state.blueprints.items()
        ],
        blueprint_assignments=[(b, c, v) for (b, c), v in state.blueprint_assignments.items()],
        blueprint_rollouts=[_rollout_entry(k, r) for k, r in state.blueprint_rollouts.items()],
        blueprint_started=[
            (name, version, sorted(clusters))
            for name, (version, clusters) in state.blueprint_started.items()
        ],
        blueprint_reached=[(b, c, v) for (b, c), v in state.blueprint_reached.items()],
        draining=sorted(state.draining),
        releases=[(c, t, v, r) for (c, t), (v, r) in state.releases.items()],
        capabilities=dict(state.capabilities),
    )


def decisions_part(state: SchedulerState, *, with_causes: bool = True) -> DecisionsPart:
    return DecisionsPart(
        schema=SNAPSHOT_SCHEMA,
        reports_seq=state.reports_seq,
        scheduled=[
            ScheduledEntry(
                taskset=taskset,
                cluster=cluster,
                version=r.version,
                generation=r.generation,
                digest=r.digest,
                removed=r.removed,
                overrides=list(r.overrides),
                wave=r.wave,
            )
            for taskset, by_cluster in state.scheduled.items()
            for cluster, r in by_cluster.items()
        ],
        generations=[(c, t, g) for (c, t), g in state.generations.items()],
        refused=[
            RefusalEntry(
                cluster=c, taskset=t, version=r.version, input_digest=r.input_digest, at=r.at
            )
            for (c, t), r in state.refused.items()
        ],
        held=[(c, t, hold, reason) for (c, t), (hold, reason) in state.held.items()],
        forced=sorted(state.forced),
        reports=[
            ReportEntry(
                cluster=c,
                taskset=t,
                failed=r.failed,
                version=r.version,
                generation=r.generation,
                removed=r.removed,
                at=r.at,
            )
            for (c, t), r in state.reports.items()
        ],
        subject_seqs=dict(state.subject_seqs),
        causes={k: list(v) for k, v in state.causes.items()} if with_causes else {},
        last_cause=dict(state.last_cause) if with_causes else {},
        global_causes=list(state.global_causes) if with_causes else [],
        resealed=sorted(state.resealed),
        shredded=state.shredded,
    )


def state_digest(state: SchedulerState) -> str:
    """A digest of everything the scheduler decides from, independent of the order the state
    was built in. The causes a next decision answers are left out: they only name causation
    ids, and which reports a restart notes as causes depends on where it started."""
    placement = msgspec.structs.asdict(placement_part(state))
    decisions = msgspec.structs.asdict(decisions_part(state, with_causes=False))
    digest = hashlib.sha256()
    for part in (placement, decisions):
        for key in sorted(part):
            value = part[key]
            if isinstance(value, list):
                value = sorted(_digest_encoder.encode(item) for item in value)
            digest.update(key.encode() + b"\0" + _digest_encoder.encode(value))
    return "sha256:" + digest.hexdigest()


def sealed_content_key(cluster: str, digest: str) -> str:
    """Where a sealed snapshot keeps `cluster`'s copy of the content with `digest`."""
    return "sha256:" + hashlib.sha256(f"{cluster}\0{digest}".encode()).hexdigest()


def history_parts(
    current: dict[str, dict[str, HistoricalTask]], keys: DataKeys | None = None
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(cluster -> encoded ClusterHistory, content key -> encoded content).

    Recomputed content holds secrets opened in memory. With `keys` (the hub seals secrets at
    rest), each cluster's content is kept under a key of its own, sealed with that cluster's
    data key, so a snapshot keeps no secret in the clear and shredding a cluster's keys makes
    its copies unreadable like its DESIRED messages; without, equal contents are kept once."""
    histories: dict[str, bytes] = {}
    contents: dict[str, bytes] = {}
    for cluster, tasks in current.items():
        entries = []
        for name in sorted(tasks):
            historical = tasks[name]
            task = historical.task
            digest = historical.content_digest if task.taskset is not None else ""
            key = digest
            if digest and keys is not None:
                key = sealed_content_key(cluster, digest)
            if key and key not in contents:
                encoded = encode_taskset(task.taskset)  # type: ignore[arg-type]
                if keys is not None:
                    encoded = seal_bytes(keys, cluster_scope(cluster), encoded, key.encode())
                contents[key] = encoded
            entries.append(
                HistoryEntry(
                    taskset=name,
                    version=task.version,
                    generation=task.generation,
                    digest=task.digest,
                    content=key,
                    wave=task.wave,
                    overrides=list(task.overrides),
                    scheduled_at=historical.scheduled_at,
                    seq=historical.seq,
                    verified=historical.verified,
                    problem=historical.problem,
                    provenance=historical.provenance,
                    content_digest=digest if key != digest else "",
                )
            )
        histories[cluster] = pack(
            ClusterHistory(schema=SNAPSHOT_SCHEMA, cluster=cluster, tasks=entries)
        )
    return histories, contents


def snapshot_parts(scheduler: SchedulerState, history: HistoryFold) -> SnapshotParts:
    """The parts of a snapshot of `scheduler` (EVENTS and REPORTS folded) and `history`
    (a fold of all clusters over the same EVENTS)."""
    if scheduler.events_seq != history.state.events_seq or history.last_time is None:
        raise SchedulerError(
            f"the scheduler state (EVENTS at {scheduler.events_seq}) and the history "
            f"(EVENTS at {history.state.events_seq}) do not cover the same log"
        )
    histories, contents = history_parts(history.current, history.keys)
    return SnapshotParts(
        events_seq=scheduler.events_seq,
        events_time=history.last_time,
        reports_seq=scheduler.reports_seq,
        placement=pack(placement_part(scheduler)),
        decisions=pack(decisions_part(scheduler)),
        histories=histories,
        contents=contents,
    )


# --- parts -> state --------------------------------------------------------------------------


def _rollout_record(entry: RolloutEntry) -> RolloutRecord:
    return RolloutRecord(
        version=entry.version,
        waves=[tuple(wave) for wave in entry.waves],
        halted=entry.halted,
        resumed_at=entry.resumed_at,
    )


def read_placement(data: bytes) -> PlacementPart:
    part: PlacementPart = _unpack(data, _placement_decoder, "the placement part")
    return part


def read_decisions(data: bytes) -> DecisionsPart:
    part: DecisionsPart = _unpack(data, _decisions_decoder, "the decisions part")
    return part


def read_history(data: bytes, cluster: str) -> ClusterHistory:
    part: ClusterHistory = _unpack(data, _history_decoder, f"the history of {cluster}")
    if part.cluster != cluster:
        raise SnapshotUnreadable(f"the history of {cluster} holds {part.cluster}'s")
    return part


def restore_state(placement: PlacementPart, decisions: DecisionsPart | None) -> SchedulerState:
    """The state a snapshot holds: `placement` alone is what the history fold needs."""
    state = SchedulerState()
    state.events_seq = placement.events_seq
    state.clusters = {name: dict(labels) for name, labels in placement.clusters.items()}
    state.deregistered = set(placement.deregistered)
    for entry in placement.tasksets:
        state.tasksets[entry.name] = TasksetRecord(
            versions={
                v.version: SnapshotRecord(
                    version=v.version,
                    digest=v.digest,
                    format=v.format,
                    body=v.body,
                    values=v.values,
                    chart_archive=v.chart_archive,
                    placement=v.placement,
                    rollout=v.rollout,
                )
                for v in entry.versions
            },
            latest=entry.latest,
            retired=entry.retired,
        )
    for override in placement.overrides:
        state.overrides.setdefault(override.taskset, {})[override.name] = override
    state.taskset_dependencies = {k: list(v) for k, v in placement.taskset_dependencies.items()}
    state.rollouts = {entry.key: _rollout_record(entry) for entry in placement.rollouts}
    for blueprint in placement.blueprints:
        state.blueprints[blueprint.name] = BlueprintRecord(
            versions={published.blueprint_version: published for published in blueprint.versions},
            latest=blueprint.latest,
            tasksets=set(blueprint.tasksets),
        )
    state.blueprint_assignments = {(b, c): v for b, c, v in placement.blueprint_assignments}
    state.blueprint_rollouts = {
        entry.key: _rollout_record(entry) for entry in placement.blueprint_rollouts
    }
    state.blueprint_started = {
        name: (version, set(clusters)) for name, version, clusters in placement.blueprint_started
    }
    state.blueprint_reached = {(b, c): v for b, c, v in placement.blueprint_reached}
    state.draining = set(placement.draining)
    state.releases = {(c, t): (v, r) for c, t, v, r in placement.releases}
    state.capabilities = dict(placement.capabilities)
    if decisions is None:
        return state
    state.reports_seq = decisions.reports_seq
    for s in decisions.scheduled:
        state.scheduled.setdefault(s.taskset, {})[s.cluster] = ScheduledRecord(
            version=s.version,
            generation=s.generation,
            digest=s.digest,
            removed=s.removed,
            overrides=tuple(s.overrides),
            wave=s.wave,
        )
    state.generations = {(c, t): g for c, t, g in decisions.generations}
    state.refused = {
        (r.cluster, r.taskset): RefusalRecord(
            version=r.version, input_digest=r.input_digest, at=r.at
        )
        for r in decisions.refused
    }
    state.held = {(c, t): (hold, reason) for c, t, hold, reason in decisions.held}
    state.forced = {(c, t) for c, t in decisions.forced}
    state.reports = {
        (r.cluster, r.taskset): ReportRecord(
            failed=r.failed,
            version=r.version,
            generation=r.generation,
            removed=r.removed,
            at=r.at,
        )
        for r in decisions.reports
    }
    state.subject_seqs = dict(decisions.subject_seqs)
    state.causes = {k: [(a, b) for a, b in v] for k, v in decisions.causes.items()}
    state.last_cause = {k: (v[0], v[1]) for k, v in decisions.last_cause.items()}
    state.global_causes = [(a, b) for a, b in decisions.global_causes]
    state.resealed = {(c, t) for c, t in decisions.resealed}
    state.shredded = decisions.shredded
    return state


def restore_history(
    history: ClusterHistory | None, contents: dict[str, bytes], keys: DataKeys | None = None
) -> dict[str, HistoricalTask]:
    """One cluster's ClusterTasks in force, as the snapshot keeps them."""
    if history is None:
        return {}
    tasks: dict[str, HistoricalTask] = {}
    for entry in history.tasks:
        content = None
        if entry.content:
            data = contents.get(entry.content)
            if data is None:
                raise SnapshotUnreadable(
                    f"the history of {history.cluster} names content {entry.content}, "
                    "which the snapshot does not hold"
                )
            if is_sealed_bytes(data):
                if keys is None:
                    raise SnapshotUnreadable(
                        f"content {entry.content} of {history.cluster} is sealed and this hub "
                        "has no keyring"
                    )
                try:
                    data = open_bytes(
                        keys, data, entry.content.encode(), f"snapshot content of {history.cluster}"
                    )
                except FleetbusError as e:
                    raise SnapshotUnreadable(str(e)) from e
            try:
                content = decode_taskset(data)
            except CorruptPayload as e:
                raise SnapshotUnreadable(f"content {entry.content}: {e}") from e
        tasks[entry.taskset] = HistoricalTask(
            task=ClusterTask(
                cluster=history.cluster,
                taskset_name=entry.taskset,
                version=entry.version,
                generation=entry.generation,
                digest=entry.digest,
                taskset=content,
                wave=entry.wave,
                overrides=list(entry.overrides),
            ),
            scheduled_at=entry.scheduled_at,
            seq=entry.seq,
            verified=entry.verified,
            problem=entry.problem,
            provenance=entry.provenance,
            content_digest=entry.content_digest or entry.content,
        )
    return tasks


def history_fold_from(
    placement: PlacementPart,
    events_time: datetime,
    cluster: str,
    history: ClusterHistory | None,
    contents: dict[str, bytes],
    renderer: ChartRenderer | None,
    keys: DataKeys | None = None,
) -> HistoryFold:
    """A fold for `cluster` that starts where the snapshot ends."""
    tasks = restore_history(history, contents, keys)
    return HistoryFold(
        renderer,
        keys=keys,
        cluster=cluster,
        state=restore_state(placement, None),
        current={cluster: tasks} if tasks else {},
        last_seq=placement.events_seq,
        last_time=events_time,
    )
