"""Errors of the scheduler. `SchedulerError` is the root."""

from __future__ import annotations

from taskset.errors import FleetbusError


class SchedulerError(FleetbusError):
    """Root of every error raised by `scheduler`."""


class LeaseLost(SchedulerError):
    """Another scheduler holds the lease now: this one must stop deciding at once."""


class DesiredWriteFailed(SchedulerError):
    """DESIRED refused or did not acknowledge a ClusterTask."""
