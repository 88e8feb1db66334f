"""Reaching a hub started by `fleetbus up` from its data dir, as the hub's own service user."""

from __future__ import annotations

from pathlib import Path

from events.sealed import EventSealer
from events.store import EventStore, connect
from fleetbus.datadir import DataDir


async def open_local_store(data_dir: Path) -> EventStore:
    data = DataDir(data_dir)
    info = data.read_hub_info()
    nc = await connect(
        [str(url) for url in info.get("nats_urls", [info["nats_url"]])],
        name="fleetbus-cli",
        credentials=data.existing_hub_credentials(),
        max_reconnect_attempts=3,
    )
    return EventStore(nc, sealer=EventSealer(data.keyring()))
