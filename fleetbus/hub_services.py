"""The hub's own deciding and reading services: the scheduler and the projector.

`fleetbus up` starts both next to the HTTP API. The scheduler takes the leader lease (a
scheduler started elsewhere with `fleetbus scheduler` waits for it, or holds it first); the
projector keeps `projector.db` in the data dir up to date for `fleetbus status` and the API.
`fleetbus up --no-scheduler` leaves scheduling to `fleetbus scheduler` processes: a scheduler
in its own process has a core (and an interpreter lock) to itself, where the one inside the
hub shares them with the projector, the API and the edge-facing services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from events.charts import ChartStore
from events.store import EventStore
from events.streams import REPORTS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.renderer import ChartArchiveRenderer
from projector.service import PROJECTION_FILE, ProjectorService
from scheduler.service import SchedulerService

log = logging.getLogger(__name__)


@dataclass
class HubServices:
    scheduler: SchedulerService | None
    """None when scheduling is left to `fleetbus scheduler` processes."""
    projector: ProjectorService
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        self.stop_event.set()
        for task in self.tasks:
            try:
                await asyncio.wait_for(task, timeout=15)
            except TimeoutError:
                log.warning("%s did not stop in time", task.get_name())
            except Exception:
                log.exception("%s failed", task.get_name())


def start_hub_services(store: EventStore, data: DataDir, *, scheduler: bool = True) -> HubServices:
    reports = EventStore(store.nc, stream=REPORTS_STREAM)
    services = HubServices(
        scheduler=SchedulerService(
            store, reports, ChartArchiveRenderer(ChartStore(store.nc)), holder="hub-scheduler"
        )
        if scheduler
        else None,
        projector=ProjectorService(store, reports, data.root / PROJECTION_FILE),
    )
    running: list[tuple[str, SchedulerService | ProjectorService]] = [
        ("projector", services.projector)
    ]
    if services.scheduler is not None:
        running.insert(0, ("scheduler", services.scheduler))
    for name, service in running:
        task = asyncio.create_task(_supervised(name, service, services.stop_event), name=name)
        services.tasks.append(task)
    return services


async def _supervised(
    name: str, service: SchedulerService | ProjectorService, stop: asyncio.Event
) -> None:
    """Run a service until `stop`; a crash is logged and the service starts again."""
    while not stop.is_set():
        try:
            await service.run(stop)
        except Exception:
            log.exception("the %s failed; restarting it", name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)
