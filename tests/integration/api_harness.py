"""A live hub API for tests: the real app on uvicorn on a free port, over a real event store.

Tests talk to it over real HTTP (httpx), so streaming, body limits and headers behave as they do
under `fleetbus up`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn

from api.app import create_app
from api.auth import Role
from api.context import HubContext
from events.sealed import EventSealer
from events.store import EventStore
from events.streams import EVENTS_STREAM, REPORTS_STREAM
from events.tasks import cancel_and_wait
from fleetbus.natsserver import free_port
from projector.service import ProjectorService
from sealing.keyring import Keyring
from sources.service import SourceWatcher


@dataclass
class LiveApi:
    hub: HubContext
    url: str
    tokens: dict[Role, str] = field(default_factory=dict)
    projector: ProjectorService | None = None

    def client(self, role: Role | None = None, **kwargs: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0, **kwargs)  # type: ignore[arg-type]


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the test decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_api(hub: HubContext) -> AsyncIterator[str]:
    """Serve `create_app(hub)` on a free loopback port until the block ends."""
    port = free_port()
    server = _QuietServer(
        uvicorn.Config(
            create_app(hub),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve(), name="uvicorn")
    deadline = asyncio.get_running_loop().time() + 60
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("uvicorn did not start within 60 s")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        hub.shutdown.set()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=60)


async def fresh_token(hub: HubContext, role: Role) -> str:
    """A token named `test-<role>` (replacing one an earlier API on this data dir made)."""
    name = f"test-{role.value}"
    if any(record.name == name for record in await hub.tokens.list()):
        await hub.tokens.revoke(name)
    return (await hub.tokens.create(role=role, name=name, now=datetime.now(UTC)))[1]


@contextlib.asynccontextmanager
async def running_sources(hub: HubContext) -> AsyncIterator[SourceWatcher]:
    """The hub's source service, as `fleetbus up` runs it (no host allowed unless a test sets
    `hub.source_policy` first)."""
    watcher = SourceWatcher(hub.store, hub.charts, hub.source_credentials, hub.source_policy)
    hub.sources = watcher
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop), name="sources")
    try:
        await asyncio.wait_for(watcher.ready.wait(), timeout=60)
        yield watcher
    finally:
        stop.set()
        await cancel_and_wait([task])


@contextlib.asynccontextmanager
async def live_api(
    store: EventStore, data_dir: Path, *, projector: bool = False
) -> AsyncIterator[LiveApi]:
    """A served API with one token per role; with `projector`, its read models kept current."""
    if store.sealer is None:
        # As `fleetbus up` connects it: secrets sealed with a keyring in the data dir.
        store.sealer = EventSealer(Keyring.open(data_dir / "keys"))
    hub = HubContext.for_store(store, data_dir)
    tokens = {role: await fresh_token(hub, role) for role in Role}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_sources(hub))
        if projector:
            service = await stack.enter_async_context(running_projector(hub))
        url = await stack.enter_async_context(serve_api(hub))
        api = LiveApi(hub=hub, url=url, tokens=tokens)
        if projector:
            api.projector = service
        yield api


@contextlib.asynccontextmanager
async def running_projector(hub: HubContext) -> AsyncIterator[ProjectorService]:
    """The projector following the hub's streams into `hub.projection`, as `fleetbus up` runs it."""
    service = ProjectorService(hub.store, hub.reports, hub.projection)
    hub.read_generation = lambda: service.generation
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop), name="projector")
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def projected(api: LiveApi) -> None:
    """Wait until the projector has caught up with the end of both streams."""
    service = api.projector
    assert service is not None, "start the API with projector=True"
    events_end = await api.hub.store.last_sequence()
    reports_end = await api.hub.reports.last_sequence()
    async with asyncio.timeout(60):
        while True:
            service.progress.clear()
            if (
                service.positions.get(EVENTS_STREAM, 0) >= events_end
                and service.positions.get(REPORTS_STREAM, 0) >= reports_end
            ):
                return
            await service.progress.wait()
