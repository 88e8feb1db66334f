"""What the HTTP layer is given by the process that serves it.

`fleetbus up` builds one `HubContext` (the event store, the data dir, the read models, the
services) and hands it to `api.app.create_app`; route handlers receive it by dependency
injection as `hub`. Keeping it one explicit object makes the API testable against any store
and data dir, with no module-level state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from litestar.di import NamedDependency

from api.auth import StreamTickets, TokenStore
from api.metrics import HubMetrics
from events.charts import ChartStore
from events.store import EventStore
from events.streams import REPORTS_STREAM

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body the API reads (uploads included); larger ones get 413."""

TOKENS_FILE = "tokens.json"
ADMIN_TOKEN_FILE = "admin.token"


@dataclass
class HubContext:
    store: EventStore
    """The EVENTS stream: every command's events go here."""
    data_dir: Path
    tokens: TokenStore
    reports: EventStore
    """The REPORTS stream, on the same connection as `store`."""
    charts: ChartStore
    """Helm chart archives of published tasksets, by content address."""
    tickets: StreamTickets = field(default_factory=StreamTickets)
    metrics: HubMetrics = field(default_factory=HubMetrics)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the hub stops: live streams end so the HTTP server can close."""
    max_body_bytes: int = MAX_BODY_BYTES
    sse_heartbeat_s: float = 15.0

    @classmethod
    def for_store(cls, store: EventStore, data_dir: Path) -> HubContext:
        """A context over a connected store, with the tokens kept in `data_dir`."""
        return cls(
            store=store,
            data_dir=data_dir,
            tokens=TokenStore(data_dir / TOKENS_FILE),
            reports=EventStore(store.nc, stream=REPORTS_STREAM, timeout=store.timeout),
            charts=ChartStore(store.nc, timeout=max(store.timeout, 10.0)),
        )


Hub: TypeAlias = NamedDependency[HubContext]
"""How a route handler asks for the context: `hub: Hub`."""
