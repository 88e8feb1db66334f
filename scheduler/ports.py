"""Ports the scheduler needs from the composition root, as Protocols so fakes type-check.

The scheduler never imports the Helm engine or the chart store: `fleetbus` implements
`ChartRenderer` with them. `prepare` fetches a chart archive before decisions are made, so
that `render` itself (called inside the pure decision code) needs no I/O.
"""

from __future__ import annotations

from typing import Protocol

from taskset.overrides import HelmRenderer


class ChartRenderer(HelmRenderer, Protocol):
    async def prepare(self, chart_archive_digest: str) -> None:
        """Make `render` ready for this archive (fetch it); raise a FleetbusError if it can't."""
        ...


__all__ = ["ChartRenderer", "HelmRenderer"]
