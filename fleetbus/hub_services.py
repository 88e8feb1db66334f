"""The hub's own deciding, reading, notifying and fetching services: the scheduler, the
projector, the notification delivery and the sources.

`fleetbus up` starts both next to the HTTP API. The scheduler takes the leader lease (a
scheduler started elsewhere with `fleetbus scheduler` waits for it, or holds it first); the
projector keeps `projector.db` in the data dir up to date for `fleetbus status` and the API.
`fleetbus up --no-scheduler` leaves scheduling to `fleetbus scheduler` processes: a scheduler
in its own process has a core (and an interpreter lock) to itself, where the one inside the
hub shares them with the projector, the API and the edge-facing services.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from charts.store import ChartStore
from events.catalog import Event
from events.store import EventStore
from events.streams import REPORTS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.renderer import ChartArchiveRenderer
from fleetbus.supervision import Supervisor
from notify.service import Notifier
from notify.store import FILE_NAME as NOTIFICATIONS_FILE
from notify.store import SubscriptionStore
from projector.service import PROJECTION_FILE, ProjectorService
from scheduler.service import SchedulerService
from scheduler.snapshot_store import SNAPSHOT_EVERY, SNAPSHOT_KEEP
from sources.credentials import CredentialStore
from sources.fetch import FetchPolicy
from sources.service import SourceWatcher


def start_hub_services(
    store: EventStore,
    data: DataDir,
    supervisor: Supervisor,
    *,
    scheduler: bool = True,
    scheduler_holder: str = "hub-scheduler",
    scheduler_lease_ttl_s: int = 15,
    snapshot_every: int = SNAPSHOT_EVERY,
    snapshot_keep: int = SNAPSHOT_KEEP,
) -> ProjectorService:
    """Start the scheduler (unless left to `fleetbus scheduler`) and the projector under
    `supervisor`; both stop on its stop event, finishing the batch in hand."""
    reports = store.on_stream(REPORTS_STREAM)
    if scheduler:
        scheduling = SchedulerService(
            store,
            reports,
            ChartArchiveRenderer(ChartStore.beside(store)),
            holder=scheduler_holder,
            lease_ttl_s=scheduler_lease_ttl_s,
            snapshot_every=snapshot_every,
            snapshot_keep=snapshot_keep,
        )
        supervisor.start(
            "scheduler", lambda: scheduling.run(supervisor.stop_event), watches_stop=True
        )
    projector = ProjectorService(store, reports, data.root / PROJECTION_FILE)
    supervisor.start("projector", lambda: projector.run(supervisor.stop_event), watches_stop=True)
    return projector


def start_notifications(store: EventStore, data: DataDir, supervisor: Supervisor) -> Notifier:
    """Deliver notifications to every subscription in the data dir, under `supervisor`."""
    notifier = Notifier(
        store, store.on_stream(REPORTS_STREAM), SubscriptionStore(data.root / NOTIFICATIONS_FILE)
    )
    supervisor.start(
        "notifications", lambda: notifier.run(supervisor.stop_event), watches_stop=True
    )
    return notifier


def start_source_service(
    store: EventStore,
    charts: ChartStore,
    data: DataDir,
    supervisor: Supervisor,
    policy: FetchPolicy,
    admit: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
) -> SourceWatcher:
    """Start the service that checks standing sources (`fleetbus source`) under `supervisor`;
    `admit` holds what they publish to their projects' quotas."""
    watcher = SourceWatcher(
        store, charts, CredentialStore.in_data_dir(data.root), policy, admit=admit
    )
    supervisor.start("sources", lambda: watcher.run(supervisor.stop_event), watches_stop=True)
    return watcher
