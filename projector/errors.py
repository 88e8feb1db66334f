"""Errors of the projector. `ProjectorError` is the root."""

from __future__ import annotations

from taskset.errors import FleetbusError


class ProjectorError(FleetbusError):
    """Root of every error raised by `projector`."""


class ProjectionMissing(ProjectorError):
    """There is no projection database yet (the hub has not run, or it is elsewhere)."""


class ProjectionUnreadable(ProjectorError):
    """The projection database could not be opened or read."""
