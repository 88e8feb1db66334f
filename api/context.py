"""What the HTTP layer is given by the process that serves it.

`fleetbus up` builds one `HubContext` (the event store, the data dir, the read models, the
services) and hands it to `api.app.create_app`; route handlers receive it by dependency
injection as `hub`. Keeping it one explicit object makes the API testable against any store
and data dir, with no module-level state.

What only the composition root can do (issue certificates and pack edge bundles, render Helm
charts, replay the scheduler's fold for a past moment, know which clusters are connected) comes
in through the small ports below, so `api` never imports `fleetbus` or `scheduler`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from litestar.di import NamedDependency

from api.auth import SingleSignOn, StreamTickets, TokenStore
from api.metrics import HubMetrics
from api.read_cache import ReadCache
from charts.store import ChartStore
from events.inventory import EdgeStatus
from events.store import EventStore
from events.streams import REPORTS_STREAM
from notify.model import Filters, Sink, Subscription, SubscriptionStatus
from projector.db import ProjectionDb
from projector.service import PROJECTION_FILE
from registry.overrides import PreparedRenderer
from registry.projects import ProjectRecord
from sealing.keyring import Keyring
from sources.credentials import CredentialStore
from sources.fetch import FetchPolicy
from sources.references import HostAllowList
from sources.service import SourceWatcher

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body the API reads (uploads included); larger ones get 413."""

TOKENS_FILE = "tokens.json"
ADMIN_TOKEN_FILE = "admin.token"
CONNECTED_WITHIN = timedelta(seconds=90)
"""A cluster heard from this recently (inventory digest or report) counts as connected."""


@dataclass(frozen=True)
class IssuedBundle:
    """A cluster's freshly issued certificate, and its edge bundle as a .tar.gz."""

    fingerprint: str
    archive: bytes


class ClusterEnrollment(Protocol):
    """Issues what a cluster needs to join (certificate, key, hub URLs), as one archive."""

    def issue(self, cluster: str, labels: Mapping[str, str], now: datetime) -> IssuedBundle: ...

    async def wait_applied(self, seq: int) -> None:
        """Return once the hub lets the cluster registered at `seq` connect."""


class ProjectAccounts(Protocol):
    """The projects' NATS accounts (`access.project_accounts.ProjectAccountService`)."""

    async def wait_applied(self, seq: int) -> None:
        """Return once the project event at `seq` is effective on every NATS server."""


class DesiredStateHistory(Protocol):
    """The desired state of a cluster at any moment, folded from the log (secrets masked)."""

    async def state_at(self, cluster: str, at: datetime | None) -> dict[str, Any]: ...


class Notifications(Protocol):
    """Notification subscriptions and their delivery (`notify.service.Notifier`)."""

    def all(self) -> list[Subscription]: ...

    async def add(
        self,
        *,
        name: str,
        sink: Sink,
        url: str,
        filters: Filters,
        hmac_key: str | None,
        created_by: str,
    ) -> tuple[Subscription, str]: ...

    async def remove(self, name: str) -> Subscription: ...

    async def status(self) -> list[SubscriptionStatus]: ...

    def delivery_counts(self) -> list[tuple[Subscription, int, int, int]]:
        """(subscription, delivered, failed attempts, consecutive failures) of each, now."""
        ...


class SnapshotControl(Protocol):
    """Snapshots of the scheduler's fold: list them, take one now."""

    async def listing(self) -> list[dict[str, Any]]: ...

    async def take(self) -> dict[str, Any] | None:
        """The snapshot covering the log now (None when the log is empty)."""


def nobody_seen() -> Mapping[str, datetime]:
    return {}


def no_edge_status() -> Mapping[str, EdgeStatus]:
    return {}


def no_generation() -> int | None:
    return None


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
    projection: Path
    """The projector's SQLite read models (read-only here)."""
    tickets: StreamTickets = field(default_factory=StreamTickets)
    metrics: HubMetrics = field(default_factory=HubMetrics)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the hub stops: live streams end so the HTTP server can close."""
    enrollment: ClusterEnrollment | None = None
    """None on a hub without a leafnode listener: it registers clusters but issues no bundle."""
    project_accounts: ProjectAccounts | None = None
    """None on a hub whose edge-facing services run elsewhere: projects get no wait."""
    renderer: PreparedRenderer | None = None
    """Re-renders Helm charts with override values (for previews)."""
    history: DesiredStateHistory | None = None
    snapshots: SnapshotControl | None = None
    """Answers "what should cluster C run as of T"."""
    notifications: Notifications | None = None
    """Notification subscriptions and their delivery (None: this hub delivers none)."""
    last_seen: Callable[[], Mapping[str, datetime]] = nobody_seen
    """When each cluster last sent an inventory digest."""
    edge_status: Callable[[], Mapping[str, EdgeStatus]] = no_edge_status
    """Each cluster's connector version and readiness, from its last inventory digest."""
    read_generation: Callable[[], int | None] = no_generation
    """Advances whenever the read models change (the projector in this process counts its
    committed batches); None when that is not known here, and then no answer is reused."""
    reads: ReadCache = field(default_factory=ReadCache)
    """Encoded answers of the read routes, with their ETags (`api.read_cache`)."""
    keyring: Keyring | None = None
    """The hub's keyring (rotation and shredding); None when secrets are not sealed."""
    max_body_bytes: int = MAX_BODY_BYTES
    sse_heartbeat_s: float = 15.0
    sources: SourceWatcher | None = None
    """Checks standing sources; None where the hub runs no source service."""
    source_policy: FetchPolicy = field(default_factory=lambda: FetchPolicy(HostAllowList()))
    """Which hosts sources may be fetched from, and the limits on what they bring."""
    sso: SingleSignOn | None = None
    """Verifies bearer JWTs of the hub's OIDC issuer (None: only fleetbus tokens)."""
    projects: dict[str, ProjectRecord] = field(default_factory=dict)
    """Projects known to exist (they are never removed), by name."""
    project_list: list[ProjectRecord] | None = None
    """Every project, as last read from the log (None: read it again)."""

    @property
    def source_credentials(self) -> CredentialStore:
        return CredentialStore.in_data_dir(self.data_dir)

    @classmethod
    def for_store(
        cls, store: EventStore, data_dir: Path, *, tokens: TokenStore | None = None
    ) -> HubContext:
        """A context over a connected store, with read models in `data_dir`, and tokens in
        `tokens` (by default the single hub's `tokens.json` there)."""
        return cls(
            store=store,
            data_dir=data_dir,
            tokens=tokens if tokens is not None else TokenStore(data_dir / TOKENS_FILE),
            reports=store.on_stream(REPORTS_STREAM),
            charts=ChartStore.beside(store),
            projection=data_dir / PROJECTION_FILE,
            keyring=keys
            if store.sealer and isinstance(keys := store.sealer.keys, Keyring)
            else None,
        )

    @contextlib.asynccontextmanager
    async def read_models(self) -> AsyncIterator[ProjectionDb]:
        """A read-only connection to the projection, for one request.

        Opened per request: the projector may swap in a rebuilt file at any time, and a new
        connection always sees the current one.
        """
        db = await ProjectionDb.open_readonly(self.projection)
        try:
            yield db
        finally:
            await db.close()


Hub: TypeAlias = NamedDependency[HubContext]
"""How a route handler asks for the context: `hub: Hub`."""
