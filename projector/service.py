"""Keeping the projection up to date, and rebuilding it from the log.

The live projector follows EVENTS and REPORTS from the positions stored in the database; each
batch is one transaction with its new positions, a redelivered sequence is skipped, and a
restart resumes where the database says. `rebuild_projection` replays both streams from
sequence 1 into a fresh file and swaps it in; a live projector notices the swap (the file is a
new inode), reopens it and continues from the rebuilt positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from events.errors import EventLogError
from events.store import EventStore, StoredEvent
from events.streams import EVENTS_STREAM, REPORTS_STREAM
from events.tasks import cancel_and_wait
from projector.db import DirectWriter, ProjectionDb
from projector.projection import project_event

log = logging.getLogger(__name__)

BATCH = 500
PROJECTION_FILE = "projector.db"


async def project_batch(db: ProjectionDb, batch: list[tuple[str, StoredEvent]]) -> int:
    """Project a batch in one transaction with its positions; returns how many were new."""
    return await db.write_batch(lambda writer: _project(writer, batch))


async def _project(db: DirectWriter, batch: list[tuple[str, StoredEvent]]) -> int:
    applied = 0
    positions = {
        str(row["stream"]): int(row["seq"])
        for row in await db.fetch_all("SELECT stream, seq FROM positions")
    }
    changed: set[str] = set()
    for stream, stored in batch:
        if stored.seq <= positions.get(stream, 0):
            continue
        await project_event(
            db,
            stream,
            stored.seq,
            stored.stored_at,
            stored.event,
            stored.headers,
            stored.subject,
        )
        positions[stream] = stored.seq
        changed.add(stream)
        applied += 1
    for stream in sorted(changed):
        await db.execute(
            "INSERT OR REPLACE INTO positions (stream, seq) VALUES (?, ?)",
            (stream, positions[stream]),
        )
    return applied


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class ProjectorService:
    def __init__(self, store: EventStore, reports: EventStore, path: Path) -> None:
        self.store = store
        self.reports = reports
        self.path = path
        self.positions: dict[str, int] = {}
        self.progress = asyncio.Event()
        """Set after every committed batch (tests and health checks wait on it)."""
        self.generation = 0
        """Advances after every committed batch and whenever the database is (re)opened: the
        read models may have changed (readers key what they keep on it)."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._follow(stop)
            except EventLogError as e:
                log.warning("projector lost the log, starting over: %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _follow(self, stop: asyncio.Event) -> None:
        """Follow both streams until `stop`, or until the database file is replaced."""
        db = await ProjectionDb.open(self.path)
        inode = await asyncio.to_thread(_inode, self.path)
        queue: asyncio.Queue[tuple[str, StoredEvent]] = asyncio.Queue(maxsize=BATCH * 4)
        try:
            self.positions = await db.positions()
            self.generation += 1
            async with asyncio.TaskGroup() as group:
                feeders = [
                    group.create_task(self._feed(EVENTS_STREAM, self.store, queue)),
                    group.create_task(self._feed(REPORTS_STREAM, self.reports, queue)),
                ]
                while not stop.is_set():
                    batch = await self._next_batch(queue, stop)
                    if batch:
                        await project_batch(db, batch)
                        self.positions = await db.positions()
                        self.generation += 1
                        self.progress.set()
                    if await asyncio.to_thread(_inode, self.path) != inode:
                        log.info("projection %s was replaced; reopening it", self.path)
                        break
                await cancel_and_wait(feeders)
        finally:
            await db.close()

    async def _next_batch(
        self, queue: asyncio.Queue[tuple[str, StoredEvent]], stop: asyncio.Event
    ) -> list[tuple[str, StoredEvent]]:
        try:
            first = await asyncio.wait_for(queue.get(), timeout=0.5)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < BATCH and not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def _feed(
        self, stream: str, store: EventStore, queue: asyncio.Queue[tuple[str, StoredEvent]]
    ) -> None:
        start = self.positions.get(stream, 0) + 1
        async with contextlib.aclosing(
            store.follow(from_seq=start, skip_undecodable=True)
        ) as events:
            async for stored in events:
                await queue.put((stream, stored))


async def rebuild_projection(
    store: EventStore, reports: EventStore, path: Path, *, replace: bool = True
) -> Path:
    """Replay both streams from sequence 1 into a fresh database; swap it in if `replace`."""
    fresh = path.with_name(path.name + ".rebuild")
    for leftover in (fresh, Path(f"{fresh}-wal"), Path(f"{fresh}-shm")):
        await asyncio.to_thread(leftover.unlink, missing_ok=True)
    db = await ProjectionDb.open(fresh)
    try:
        for stream, source in ((EVENTS_STREAM, store), (REPORTS_STREAM, reports)):
            batch: list[tuple[str, StoredEvent]] = []
            async for stored in source.read(from_seq=1, skip_undecodable=True):
                batch.append((stream, stored))
                if len(batch) >= BATCH:
                    await project_batch(db, batch)
                    batch = []
            if batch:
                await project_batch(db, batch)
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await db.close()
    if not replace:
        return fresh
    await asyncio.to_thread(os.replace, fresh, path)
    for stale in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        await asyncio.to_thread(stale.unlink, missing_ok=True)
    return path
