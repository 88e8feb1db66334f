"""The projector under fault: a live `ProjectorService` on its own connection, and the clean
replay its read models must equal once it has caught up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from events.store import EventStore, connect
from events.streams import EVENTS_STREAM, REPORTS_STREAM
from events.tasks import cancel_and_wait
from projector.db import ProjectionDb
from projector.service import ProjectorService, rebuild_projection


@dataclass
class LiveProjector:
    service: ProjectorService
    store: EventStore
    path: Path
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    def caught_up(self, last_seq: int, stream: str = EVENTS_STREAM) -> bool:
        """Whether the projection has reached `last_seq` of `stream` (fails if it died)."""
        if self.task.done():
            error = self.task.exception()
            raise AssertionError(f"the projector stopped: {error!r}")
        return self.service.positions.get(stream, 0) >= last_seq

    async def stop(self) -> None:
        self.stop_event.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=15)
        except TimeoutError:
            await cancel_and_wait([self.task])
        finally:
            await self.store.close()

    async def digests(self) -> dict[str, str]:
        db = await ProjectionDb.open_readonly(self.path)
        try:
            return await db.table_digests()
        finally:
            await db.close()


async def start_projector(urls: list[str], credentials: Path, path: Path) -> LiveProjector:
    nc = await connect(urls, name="fault-projector", credentials=credentials)
    store = EventStore(nc, timeout=2.0)
    service = ProjectorService(store, EventStore(nc, stream=REPORTS_STREAM, timeout=2.0), path)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop), name="projector-under-fault")
    return LiveProjector(service, store, path, stop, task)


async def clean_replay_digests(store: EventStore, directory: Path) -> dict[str, str]:
    """The read models of a fresh replay of the whole log, as table digests."""
    fresh = await rebuild_projection(
        store,
        store.on_stream(REPORTS_STREAM),
        directory / "clean-replay.db",
        replace=False,
    )
    db = await ProjectionDb.open_readonly(fresh)
    try:
        return await db.table_digests()
    finally:
        await db.close()
