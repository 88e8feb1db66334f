"""The hub's own deciding and reading services: the scheduler and the projector.

`fleetbus up` starts both next to the HTTP API. The scheduler takes the leader lease (a
scheduler started elsewhere with `fleetbus scheduler` waits for it, or holds it first); the
projector keeps `projector.db` in the data dir up to date for `fleetbus status` and the API.
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
    scheduler: SchedulerService
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


def start_hub_services(store: EventStore, data: DataDir) -> HubServices:
    reports = EventStore(store.nc, stream=REPORTS_STREAM)
    services = HubServices(
        scheduler=SchedulerService(
            store, reports, ChartArchiveRenderer(ChartStore(store.nc)), holder="hub-scheduler"
        ),
        projector=ProjectorService(store, reports, data.root / PROJECTION_FILE),
    )
    for name, service in (("scheduler", services.scheduler), ("projector", services.projector)):
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
