"""Throwaway hubs for benchmarks: a hub nats-server in a temporary data dir, removed afterwards.

The server is the hub's own (`fleetbus.hub.start_hub_nats`, same template and limits), so what a
benchmark measures is what `fleetbus up` runs.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from events.store import EventStore, connect
from events.streams import hub_streams
from fleetbus.datadir import DataDir
from fleetbus.hub import start_hub_nats
from fleetbus.natsserver import NatsServer, free_port


@dataclass
class ThrowawayHub:
    server: NatsServer
    data: DataDir

    @property
    def url(self) -> str:
        return self.server.client_url

    @property
    def credentials(self) -> Path:
        return self.data.hub_credentials

    async def store(self, name: str = "fleetbus-bench", *, retention: bool = False) -> EventStore:
        """A store connected as the hub's own service user, with the hub streams ensured (as
        a hub with a retention window creates them, with `retention`)."""
        nc = await connect(self.url, name=name, credentials=self.credentials)
        store = EventStore(nc)
        await store.ensure_streams(hub_streams(retention=retention))
        return store


@contextlib.asynccontextmanager
async def throwaway_hub() -> AsyncIterator[ThrowawayHub]:
    with tempfile.TemporaryDirectory(prefix="fleetbus-bench-") as tmp:
        data = DataDir(Path(tmp) / "hub")
        server = start_hub_nats(data, host="127.0.0.1", port=free_port())
        try:
            yield ThrowawayHub(server, data)
        finally:
            server.stop()
