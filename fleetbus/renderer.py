"""The hub's Helm renderer for the scheduler and previews: chart archives from the hub's store,
rendered with the normalizer's Helm engine.

Archives are fetched (asynchronously) by `prepare` and kept in a small cache, so `render`, which
the pure decision code calls, does no I/O of its own.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from charts.store import ChartStore
from taskset.capabilities import RenderContext
from taskset.model import Taskset
from taskset.overrides import RefusedOverride


class ChartArchiveRenderer:
    def __init__(self, charts: ChartStore, cache_size: int = 16) -> None:
        self.charts = charts
        self.cache_size = cache_size
        self._archives: OrderedDict[str, bytes] = OrderedDict()

    async def prepare(self, chart_archive_digest: str) -> None:
        if chart_archive_digest in self._archives:
            self._archives.move_to_end(chart_archive_digest)
            return
        self._archives[chart_archive_digest] = await self.charts.get(chart_archive_digest)
        while len(self._archives) > self.cache_size:
            self._archives.popitem(last=False)

    def render(
        self,
        chart_archive_digest: str,
        values: dict[str, Any],
        name: str,
        namespace: str,
        previous: Taskset | None = None,
        context: RenderContext | None = None,
    ) -> Taskset:
        archive = self._archives.get(chart_archive_digest)
        if archive is None:
            raise RefusedOverride(
                f"chart archive {chart_archive_digest} of taskset {name} is not on the hub"
            )
        # Imported on the first render, not at start: the Helm engine's native library holds
        # ~65 MiB resident, which a hub whose tasksets need no per-cluster rendering never pays.
        from normalizer.helm import render_chart_archive

        return render_chart_archive(archive, values, name, namespace, previous, context)
