"""Snapshots kept in JetStream, taken from the log, and read back by the scheduler and history.

The SNAPSHOTS stream (created with the hub's streams, same replicas) holds each snapshot as
messages under `fleet.snapshot.<id>.`: the `placement` and `decisions` parts cut in chunks of
`CHUNK_BYTES`, one `history.<cluster>` message per cluster, one `content.<digest>` message per
distinct ClusterTask content, and last the `manifest` (JSON: the EVENTS sequence and time and
the REPORTS sequence it covers, the schema, each part's chunk count and SHA-256). A snapshot
without its manifest was never finished and is never read. Every operation is a named
operation of `events.port.JetStreamPort`.

`SnapshotTaker` builds snapshots the way a full replay would fold the log: from the newest
usable snapshot (or from nothing) it folds the events and then the reports that came after
it, and keeps the fold in memory for the next one. `desired_state_from_log` answers
`state --at T` from the newest usable snapshot taken at or before T and the events after it;
a snapshot that cannot be read is logged and the next older one, or a full replay, is used.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from events.errors import EventLogError, EventLogUnavailable
from events.port import JetStreamPort, Outgoing, Reply
from events.store import EventStore
from events.streams import EVENTS_STREAM, SNAPSHOTS_STREAM, snapshots_stream
from events.subjects import SNAPSHOT_PREFIX
from scheduler.history import DesiredStateAt, HistoryFold, desired_state_at
from scheduler.ports import ChartRenderer
from scheduler.snapshots import (
    SNAPSHOT_SCHEMA,
    ClusterHistory,
    SnapshotParts,
    SnapshotUnreadable,
    checksum,
    history_fold_from,
    read_decisions,
    read_history,
    read_placement,
    restore_history,
    restore_state,
    snapshot_parts,
)
from scheduler.state import SchedulerState

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 10_000
"""Events between two snapshots the scheduler leader takes (`--snapshot-every`)."""
SNAPSHOT_KEEP = 8
"""Snapshots kept; older ones are removed after a new one is written."""
CHUNK_BYTES = 1024 * 1024
"""Largest message of a part (the hub's max_payload is 8 MB)."""
WRITE_WINDOW = 256
"""Snapshot messages one pipelined write keeps in flight."""
READ_BATCH = 512
"""Messages one batched direct get of a snapshot asks for."""
SECTIONS = ("placement", "decisions")


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot's manifest."""

    id: str
    schema: int
    events_seq: int
    events_time: datetime
    reports_seq: int
    taken_at: datetime
    clusters: int
    contents: int
    size: int
    """Bytes of every message of the snapshot."""
    chunks: dict[str, tuple[int, str]]
    """part -> (chunk count, SHA-256 of the whole part)."""

    @property
    def usable(self) -> bool:
        return self.schema == SNAPSHOT_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "schema": self.schema,
            "eventsSequence": self.events_seq,
            "eventsTime": self.events_time.isoformat(),
            "reportsSequence": self.reports_seq,
            "takenAt": self.taken_at.isoformat(),
            "clusters": self.clusters,
            "contents": self.contents,
            "bytes": self.size,
            "chunks": {name: {"count": n, "sha256": sha} for name, (n, sha) in self.chunks.items()},
        }

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotInfo:
        try:
            raw = orjson.loads(data)
            return cls(
                id=str(raw["id"]),
                schema=int(raw["schema"]),
                events_seq=int(raw["eventsSequence"]),
                events_time=datetime.fromisoformat(raw["eventsTime"]),
                reports_seq=int(raw["reportsSequence"]),
                taken_at=datetime.fromisoformat(raw["takenAt"]),
                clusters=int(raw["clusters"]),
                contents=int(raw["contents"]),
                size=int(raw["bytes"]),
                chunks={
                    name: (int(entry["count"]), str(entry["sha256"]))
                    for name, entry in raw["chunks"].items()
                },
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise SnapshotUnreadable(f"unreadable snapshot manifest: {e!r}") from e


def _subject(snapshot: str, *tokens: str) -> str:
    return ".".join((SNAPSHOT_PREFIX, snapshot, *tokens))


def _content_token(digest: str) -> str:
    return digest.removeprefix("sha256:")


class SnapshotStore:
    """Snapshots in the SNAPSHOTS stream: list, write, read back, prune."""

    def __init__(self, store: EventStore, *, timeout: float = 10.0) -> None:
        self.store = store
        self.port = JetStreamPort(store.api, timeout=timeout)
        self.keys = store.sealer.keys if store.sealer is not None else None
        """The hub's data keys: histories' contents are sealed with them (see
        `scheduler.snapshots.history_parts`); None when the hub seals nothing."""

    async def ensure_stream(self) -> None:
        """Create SNAPSHOTS if it is missing (the hub creates it with its streams), with as
        many replicas as EVENTS."""
        if await self.port.stream_info(SNAPSHOTS_STREAM) is not None:
            return
        events = await self.port.stream_info(EVENTS_STREAM)
        replicas = int(events["config"].get("num_replicas", 1)) if events else 1
        await self.store.ensure_stream(snapshots_stream(replicas))

    async def listing(self) -> list[SnapshotInfo]:
        """Every finished snapshot, newest (highest EVENTS sequence) first; a manifest that
        cannot be read is logged and left out."""
        if await self.port.stream_info(SNAPSHOTS_STREAM) is None:
            return []
        found: list[SnapshotInfo] = []
        for reply in await self.port.last_per_subject(
            SNAPSHOTS_STREAM, _subject("*", "manifest"), 10_000
        ):
            try:
                found.append(SnapshotInfo.from_json(reply.data))
            except SnapshotUnreadable as e:
                log.warning("skipping snapshot %s: %s", reply.headers.get("Nats-Subject"), e)
        return sorted(found, key=lambda info: (info.events_seq, info.taken_at), reverse=True)

    # --- writing -------------------------------------------------------------------------

    async def write(self, parts: SnapshotParts, taken_at: datetime) -> SnapshotInfo:
        """Store every part, then the manifest that makes the snapshot visible."""
        await self.ensure_stream()
        snapshot = f"{parts.events_seq:012d}-{secrets.token_hex(4)}"
        messages: list[Outgoing] = []
        chunks: dict[str, tuple[int, str]] = {}
        for name, data in (("placement", parts.placement), ("decisions", parts.decisions)):
            pieces = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
            chunks[name] = (len(pieces), checksum(data))
            messages += [
                Outgoing(_subject(snapshot, name, str(index)), piece, {})
                for index, piece in enumerate(pieces)
            ]
        messages += [
            Outgoing(_subject(snapshot, "history", cluster), data, {})
            for cluster, data in parts.histories.items()
        ]
        messages += [
            Outgoing(_subject(snapshot, "content", _content_token(digest)), data, {})
            for digest, data in parts.contents.items()
        ]
        await self._send(messages)
        info = SnapshotInfo(
            id=snapshot,
            schema=SNAPSHOT_SCHEMA,
            events_seq=parts.events_seq,
            events_time=parts.events_time,
            reports_seq=parts.reports_seq,
            taken_at=taken_at,
            clusters=len(parts.histories),
            contents=len(parts.contents),
            size=sum(len(m.payload) for m in messages),
            chunks=chunks,
        )
        await self._send(
            [Outgoing(_subject(snapshot, "manifest"), orjson.dumps(info.to_json()), {})]
        )
        return info

    async def _send(self, messages: Sequence[Outgoing]) -> None:
        async with self.port.pipeline(f"write {SNAPSHOTS_STREAM}") as pipeline:
            for start in range(0, len(messages), WRITE_WINDOW):
                chunk = messages[start : start + WRITE_WINDOW]
                answers = await pipeline.send(chunk, within=self.port.timeout)
                for message, answer in zip(chunk, answers, strict=True):
                    if answer is None or not _stored(answer):
                        answer = await self.port.request(
                            message.subject, message.payload, message.headers
                        )
                        if not _stored(answer):
                            raise EventLogUnavailable(
                                f"cannot write {message.subject}: {answer.data[:200]!r}"
                            )

    async def remove(self, snapshot: str) -> None:
        """Remove a snapshot: its manifest first, so it is never seen half removed."""
        await self.port.purge(SNAPSHOTS_STREAM, _subject(snapshot, "manifest"))
        await self.port.purge(SNAPSHOTS_STREAM, _subject(snapshot, ">"))

    async def prune(self, keep: int) -> list[str]:
        """Remove all but the `keep` newest snapshots (and unfinished ones older than them);
        the ids removed."""
        removed = []
        for info in (await self.listing())[keep:]:
            await self.remove(info.id)
            removed.append(info.id)
        return removed

    # --- reading -------------------------------------------------------------------------

    async def read_part(self, info: SnapshotInfo, name: str) -> bytes:
        """A whole part (`placement` or `decisions`), its checksum verified."""
        count, sha = info.chunks.get(name, (0, ""))
        if count == 0:
            raise SnapshotUnreadable(f"snapshot {info.id} has no {name} part")
        replies = await self._all(_subject(info.id, name, "*"))
        pieces: dict[int, bytes] = {}
        for reply in replies:
            index = reply.headers.get("Nats-Subject", "").rsplit(".", 1)[-1]
            if index.isdigit():
                pieces[int(index)] = reply.data
        if sorted(pieces) != list(range(count)):
            raise SnapshotUnreadable(
                f"snapshot {info.id}: {name} has {len(pieces)} of its {count} chunks"
            )
        data = b"".join(pieces[i] for i in range(count))
        if checksum(data) != sha:
            raise SnapshotUnreadable(f"snapshot {info.id}: {name} fails its checksum")
        return data

    async def read_history(
        self, info: SnapshotInfo, cluster: str
    ) -> tuple[ClusterHistory | None, dict[str, bytes]]:
        """One cluster's history in the snapshot (None when it held nothing) and the
        contents it names."""
        reply = await self.port.last_message(
            SNAPSHOTS_STREAM, _subject(info.id, "history", cluster)
        )
        if reply is None:
            return None, {}
        history = read_history(reply.data, cluster)
        digests = sorted({entry.content for entry in history.tasks if entry.content})
        contents: dict[str, bytes] = {}
        if digests:
            subjects = [_subject(info.id, "content", _content_token(d)) for d in digests]
            for found in await self.port.last_per_subject(
                SNAPSHOTS_STREAM, subjects, len(subjects)
            ):
                token = found.headers.get("Nats-Subject", "").rsplit(".", 1)[-1]
                contents[f"sha256:{token}"] = found.data
            for digest in digests:
                # A batch the server cut short: the rest one by one.
                if digest not in contents:
                    single = await self.port.last_message(
                        SNAPSHOTS_STREAM, _subject(info.id, "content", _content_token(digest))
                    )
                    if single is not None:
                        contents[digest] = single.data
        return history, contents

    async def read_histories(self, info: SnapshotInfo) -> dict[str, ClusterHistory]:
        """Every cluster's history in the snapshot."""
        histories: dict[str, ClusterHistory] = {}
        for reply in await self._all(_subject(info.id, "history", "*")):
            cluster = reply.headers.get("Nats-Subject", "").rsplit(".", 1)[-1]
            histories[cluster] = read_history(reply.data, cluster)
        if len(histories) != info.clusters:
            raise SnapshotUnreadable(
                f"snapshot {info.id} holds {len(histories)} of its {info.clusters} histories"
            )
        return histories

    async def read_contents(self, info: SnapshotInfo) -> dict[str, bytes]:
        contents = {
            "sha256:" + reply.headers.get("Nats-Subject", "").rsplit(".", 1)[-1]: reply.data
            for reply in await self._all(_subject(info.id, "content", "*"))
        }
        if len(contents) != info.contents:
            raise SnapshotUnreadable(
                f"snapshot {info.id} holds {len(contents)} of its {info.contents} contents"
            )
        return contents

    async def _all(self, subject_filter: str) -> list[Reply]:
        """Every message under `subject_filter`, paged through batched direct gets."""
        found: list[Reply] = []
        start = 1
        while True:
            batch = await self.port.messages_from(
                SNAPSHOTS_STREAM, subject_filter, start, READ_BATCH
            )
            if not batch:
                return found  # a batch may come back short of READ_BATCH: only none ends it
            found += batch
            start = int(batch[-1].headers.get("Nats-Sequence", "0")) + 1

    async def load_state(
        self, events_last: int, reports_last: int
    ) -> tuple[SnapshotInfo, SchedulerState] | None:
        """The scheduler's state from the newest usable snapshot (None: replay from the
        start). A snapshot ahead of the streams (they were recreated) is not usable."""
        for info in await self.listing():
            if not info.usable:
                log.warning(
                    "skipping snapshot %s: schema %d, this scheduler reads %d",
                    info.id,
                    info.schema,
                    SNAPSHOT_SCHEMA,
                )
                continue
            if info.events_seq > events_last or info.reports_seq > reports_last:
                log.warning(
                    "skipping snapshot %s: it covers EVENTS %d / REPORTS %d, the streams end "
                    "at %d / %d",
                    info.id,
                    info.events_seq,
                    info.reports_seq,
                    events_last,
                    reports_last,
                )
                continue
            try:
                placement = read_placement(await self.read_part(info, "placement"))
                decisions = read_decisions(await self.read_part(info, "decisions"))
            except (SnapshotUnreadable, EventLogError) as e:
                log.warning("skipping snapshot %s: %s", info.id, e)
                continue
            return info, restore_state(placement, decisions)
        return None

    async def load_fold(
        self, events_last: int, reports_last: int, renderer: ChartRenderer | None
    ) -> HistoryFold | None:
        """A fold of every cluster's history (and the scheduler's state) from the newest
        usable snapshot; None when there is none."""
        for info in await self.listing():
            if not info.usable or info.events_seq > events_last or info.reports_seq > reports_last:
                continue
            try:
                placement = read_placement(await self.read_part(info, "placement"))
                decisions = read_decisions(await self.read_part(info, "decisions"))
                histories = await self.read_histories(info)
                contents = await self.read_contents(info)
                current = {
                    cluster: tasks
                    for cluster, history in histories.items()
                    if (tasks := restore_history(history, contents, self.keys))
                }
            except (SnapshotUnreadable, EventLogError) as e:
                log.warning("skipping snapshot %s: %s", info.id, e)
                continue
            return HistoryFold(
                renderer,
                keys=self.keys,
                state=restore_state(placement, decisions),
                current=current,
                last_seq=info.events_seq,
                last_time=info.events_time,
            )
        return None


def _stored(answer: Reply) -> bool:
    if answer.status is not None:
        return False
    try:
        ack = orjson.loads(answer.data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(ack, dict) and "seq" in ack and not ack.get("error")


class SnapshotTaker:
    """Takes snapshots from the log (see the module docstring)."""

    def __init__(
        self,
        store: EventStore,
        reports: EventStore,
        renderer: ChartRenderer | None,
        *,
        keep: int = SNAPSHOT_KEEP,
    ) -> None:
        self.store = store
        self.reports = reports
        self.renderer = renderer
        self.snapshots = SnapshotStore(store)
        self.keep = keep
        self._fold: HistoryFold | None = None

    @property
    def covered(self) -> int:
        """The EVENTS sequence the fold in memory has reached (0 before the first take)."""
        return self._fold.state.events_seq if self._fold is not None else 0

    async def take(self, now: datetime) -> SnapshotInfo | None:
        """Fold what the log holds beyond the last snapshot and store a snapshot of it; the
        snapshot already covering the log if there is one; None for an empty log."""
        events_last = await self.store.last_sequence()
        reports_last = await self.reports.last_sequence()
        fold = self._fold
        if fold is None or fold.state.events_seq > events_last:
            fold = await self.snapshots.load_fold(events_last, reports_last, self.renderer)
            fold = fold or HistoryFold(self.renderer, keys=self.snapshots.keys)
            self._fold = fold
        async for stored in self.store.read(
            from_seq=fold.state.events_seq + 1, skip_undecodable=True
        ):
            await fold.apply(stored)
        async for stored in self.reports.read(
            from_seq=fold.state.reports_seq + 1, skip_undecodable=True
        ):
            fold.state.apply_report(
                stored.seq, stored.stored_at, stored.event, stored.headers, stored.subject
            )
        state = fold.state
        if state.events_seq == 0:
            return None
        for info in await self.snapshots.listing():
            if (info.events_seq, info.reports_seq, info.schema) == (
                state.events_seq,
                state.reports_seq,
                SNAPSHOT_SCHEMA,
            ):
                return info
        info = await self.snapshots.write(snapshot_parts(state, fold), now)
        removed = await self.snapshots.prune(self.keep)
        log.info(
            "snapshot %s taken: EVENTS %d, REPORTS %d, %d clusters, %d bytes%s",
            info.id,
            info.events_seq,
            info.reports_seq,
            info.clusters,
            info.size,
            f"; removed {', '.join(removed)}" if removed else "",
        )
        return info


async def desired_state_from_log(
    store: EventStore,
    cluster: str,
    at: datetime | None,
    renderer: ChartRenderer | None,
    *,
    snapshots: SnapshotStore | None = None,
) -> DesiredStateAt:
    """`cluster`'s desired state as of `at` (now when None): from the newest usable snapshot
    taken at or before `at` and the events after it, or from the whole log."""
    snapshots = snapshots or SnapshotStore(store)
    keys = store.sealer.keys if store.sealer is not None else None
    events_last = await store.last_sequence()
    try:
        candidates = await snapshots.listing()
    except EventLogError as e:
        log.warning("cannot list snapshots, replaying the whole log: %s", e)
        candidates = []
    for info in candidates:
        if at is not None and info.events_time > at:
            continue
        if not info.usable or info.events_seq > events_last:
            log.warning(
                "skipping snapshot %s: schema %d (this hub reads %d), EVENTS %d (the log ends "
                "at %d)",
                info.id,
                info.schema,
                SNAPSHOT_SCHEMA,
                info.events_seq,
                events_last,
            )
            continue
        try:
            placement = read_placement(await snapshots.read_part(info, "placement"))
            history, contents = await snapshots.read_history(info, cluster)
            start = history_fold_from(
                placement, info.events_time, cluster, history, contents, renderer, keys
            )
        except (SnapshotUnreadable, EventLogError) as e:
            log.warning("skipping snapshot %s: %s", info.id, e)
            continue
        return await desired_state_at(
            store.read(from_seq=info.events_seq + 1, until=at, skip_undecodable=True),
            cluster,
            renderer,
            start=start,
            keys=keys,
        )
    return await desired_state_at(
        store.read(until=at, skip_undecodable=True), cluster, renderer, keys=keys
    )
