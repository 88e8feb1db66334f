"""One supervisor for the hub's long-running services, with one backoff policy.

Every service the hub runs beside its HTTP API (cluster access, provisioning, anti-entropy,
source revival, the scheduler, the projector, the nats-server watchdog) rebuilds its state from
the log when it starts, so the answer to a failure is always the same: log it, wait, start the
service again. `Supervisor` runs each as a task under that rule and stops them all together;
`Backoff` is the one pacing of restarts: doubling from half a second to ten, and back to the
start once a run has lasted a minute, so a service that fails again hours later is not made to
wait the ceiling.

What is logged says how worried to be: the log unreachable (the hub's nats-server restarting)
is a warning, any other `FleetbusError` an error, anything else a bug, with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from events.errors import EventLogError
from events.tasks import cancel_and_wait
from taskset.errors import FleetbusError

log = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
"""How long the services get to stop on their own before they are cancelled."""


@dataclass(frozen=True)
class Backoff:
    """Pauses between restarts: `first`, then times `factor` up to `ceiling`."""

    first: float = 0.5
    factor: float = 2.0
    ceiling: float = 10.0
    reset_after: float = 60.0
    """A run that lasted this long starts the pauses from `first` again."""

    def delays(self) -> Iterator[float]:
        delay = self.first
        while True:
            yield delay
            delay = min(delay * self.factor, self.ceiling)


RESTART_BACKOFF = Backoff()


OnFailure = Callable[[Exception, float], None]
"""Told of each failure and the pause before the next start (it must be quick)."""


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    backoff: Backoff = RESTART_BACKOFF,
    on_failure: OnFailure | None = None,
) -> None:
    """Run `run` until it returns or `stop` is set, starting it again after each failure."""
    pacing = _Pacing(backoff)
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run()
            return
        except EventLogError as e:
            delay = pacing.after_run_from(started)
            log.warning("%s interrupted (%s); restarting in %.1fs", name, e, delay)
            failure: Exception = e
        except FleetbusError as e:
            delay = pacing.after_run_from(started)
            log.error("%s failed (%s); restarting in %.1fs", name, e, delay)
            failure = e
        except Exception as e:
            delay = pacing.after_run_from(started)
            log.exception("%s failed; restarting in %.1fs", name, delay)
            failure = e
        if on_failure is not None:
            on_failure(failure, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)


@dataclass
class _Pacing:
    backoff: Backoff
    delays: Iterator[float] = field(init=False)

    def __post_init__(self) -> None:
        self.delays = self.backoff.delays()

    def after_run_from(self, started: float) -> float:
        """The pause before the next run, for a run that started at `started` (monotonic)."""
        if time.monotonic() - started >= self.backoff.reset_after:
            self.delays = self.backoff.delays()
        return next(self.delays)


@dataclass
class Supervisor:
    """The hub's services as supervised tasks, stopped together."""

    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _watching: set[asyncio.Task[None]] = field(default_factory=set)

    def start(
        self, name: str, run: Callable[[], Awaitable[None]], *, watches_stop: bool = False
    ) -> asyncio.Task[None]:
        """Supervise `run`; `watches_stop` says it returns by itself once `stop_event` is set
        (it then gets `STOP_GRACE_S` to finish its work), otherwise it is cancelled."""
        task = asyncio.create_task(supervise(name, run, self.stop_event), name=name)
        self.tasks.append(task)
        if watches_stop:
            self._watching.add(task)
        return task

    async def stop(self) -> None:
        """Ask the services to stop; cancel those still running after `STOP_GRACE_S`.

        Services that do not watch `stop_event` (they follow the log until cancelled) are
        cancelled at once."""
        self.stop_event.set()
        if not self.tasks:
            return
        await cancel_and_wait([task for task in self.tasks if task not in self._watching])
        late: set[asyncio.Task[None]] = set()
        if self._watching:
            _, late = await asyncio.wait(self._watching, timeout=STOP_GRACE_S)
        for task in late:
            log.warning("%s did not stop in time; cancelling it", task.get_name())
        await cancel_and_wait(list(late))
        for task in self.tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                log.error("%s failed", task.get_name(), exc_info=error)
        self.tasks = []
        self._watching = set()
