"""The controller's health: live while its loops run, ready once its watches are synced.

Ready means every informer of the controller's own resources (Tasks, Tasklets, Steps, fleetbus
Namespaces) has listed and is watching, the kinds it applied before are watched again, and its
workers run. A replica waiting for the leader Lease is ready too: it serves nothing yet, but a
Deployment rolling out a second replica must not wait for a leadership it cannot get.

Reads the running `Controller` only; nothing here changes it.
"""

from __future__ import annotations

import asyncio

from cluster_controller.runtime import Controller

Sample = tuple[str, str, str, float, dict[str, str]]
"""(name, type, help, value, labels): one Prometheus sample."""


class ControllerHealth:
    def __init__(self, controller: Controller, version: str) -> None:
        self.controller = controller
        self.version = version
        self.started = asyncio.Event()
        """Set once the controller's run is under way (after leader election, if any)."""
        self.ready = asyncio.Event()
        """Passed to `Controller.run`: set once the caches are synced and workers run."""
        self.standby = False
        """True while this replica waits for the leader Lease."""
        self.stopped: str = ""
        """Why the controller stopped ("" while it runs)."""

    def informers_synced(self) -> dict[str, bool]:
        c = self.controller
        return {
            i.info.plural: i.listed.is_set() for i in (c.tasks, c.tasklets, c.steps, c.namespaces)
        }

    def live(self) -> tuple[bool, str]:
        if self.stopped:
            return False, self.stopped
        return True, "running"

    def readiness(self) -> tuple[bool, str]:
        if self.stopped:
            return False, self.stopped
        if self.standby:
            return True, "standby: another replica holds the leader Lease"
        unsynced = [name for name, synced in self.informers_synced().items() if not synced]
        if unsynced:
            return False, f"watches not synced yet: {', '.join(sorted(unsynced))}"
        if not self.ready.is_set():
            return False, "watches synced; starting the workers"
        return True, "watches synced"

    def samples(self) -> list[Sample]:
        c = self.controller
        ready, _ = self.readiness()
        samples: list[Sample] = [
            (
                "fleetbus_controller_info",
                "gauge",
                "The cluster controller's version.",
                1,
                {"version": self.version},
            ),
            ("fleetbus_controller_ready", "gauge", "1 once the watches are synced.", ready, {}),
            (
                "fleetbus_controller_leader",
                "gauge",
                "1 when this replica reconciles (it leads, or no election is held).",
                not self.standby and self.started.is_set(),
                {},
            ),
            (
                "fleetbus_controller_reconciles_total",
                "counter",
                "Reconciles finished since start.",
                c.reconciles,
                {},
            ),
            (
                "fleetbus_controller_queue_depth",
                "gauge",
                "Keys waiting in the work queue.",
                c.queue.pending(),
                {},
            ),
            (
                "fleetbus_controller_watched_kinds",
                "gauge",
                "Kinds of applied objects watched for readiness and drift.",
                len(c.watched_kinds()),
                {},
            ),
        ]
        for name, synced in sorted(self.informers_synced().items()):
            samples.append(
                (
                    "fleetbus_controller_watch_synced",
                    "gauge",
                    "1 once the watch of the resource has listed and is following changes.",
                    synced,
                    {"resource": name},
                )
            )
        return samples
