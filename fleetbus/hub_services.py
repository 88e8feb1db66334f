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
from events.tasks import cancel_and_wait
from fleetbus.datadir import DataDir
from fleetbus.renderer import ChartArchiveRenderer
from projector.service import PROJECTION_FILE, ProjectorService
from scheduler.service import SchedulerService

log = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
"""How long the services get to stop on their own before they are cancelled."""


@dataclass
class HubServices:
    scheduler: SchedulerService | None
    """None when scheduling is left to `fleetbus scheduler` processes."""
    projector: ProjectorService
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        """Ask the services to stop; cancel those still running after `STOP_GRACE_S`."""
        self.stop_event.set()
        if not self.tasks:
            return
        _, late = await asyncio.wait(self.tasks, timeout=STOP_GRACE_S)
        for task in late:
            log.warning("%s did not stop in time; cancelling it", task.get_name())
        await cancel_and_wait(late)
        for task in self.tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                log.error("%s failed", task.get_name(), exc_info=error)


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
