"""P13 — the dashboard at 10,000 clusters: time to a meaningful paint and the page's memory.

A hub with 10,000 simulated clusters (`fleetbus up --sim-clusters`, as P2 runs them, with
`fleetbus scheduler`) has one taskset applied everywhere; headless Chromium (the browser test's,
driven over the DevTools protocol) signs in and reloads the fleet page. Per load: the time from
navigation start to the fleet page's first full render (the dashboard's `fleet-rendered`
performance mark: summary, filters and the first page of clusters in the DOM) and Chromium's
first contentful paint; then, after a garbage collection, the page's JavaScript heap and DOM
node count (`Performance.getMetrics`). Then a second version is published while the page is
open and followed live to every cluster, and the heap is read again. The answer sizes of
`/api/v1/fleet` (what the page asks for) and `/api/v1/status` (the whole matrix) are shown
beside them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.browser import Browser, DevToolsError, Page, find_chromium
from bench.convergence import converge, running_fleet
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import HubFailed
from bench.summary import median

KEY = "P13"
TITLE = "Dashboard at 10,000 clusters"
TARGETS: list[Target] = []
FULL_CLUSTERS = 10_000
QUICK_CLUSTERS = 150
SIM_PROCESSES = 4
CONVERGE_S = 240.0

MEANINGFUL = "performance.getEntriesByName('fleet-rendered')[0]?.startTime"
FIRST_PAINT = (
    "performance.getEntriesByType('paint')"
    ".find(p => p.name === 'first-contentful-paint')?.startTime"
)


async def page_metrics(page: Page) -> dict[str, float]:
    await page.call("HeapProfiler.collectGarbage")
    answer = await page.call("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in answer["metrics"]}


async def load_fleet_page(page: Page) -> tuple[float, float | None]:
    """Reload the fleet page (signed in); its meaningful and first contentful paint, in s."""
    await page.evaluate("window.__replaced = true; true")
    await page.call("Page.reload", {"ignoreCache": True})
    await page.wait_for("!window.__replaced", 60)
    rendered = await page.wait_for(f"document.readyState === 'complete' && {MEANINGFUL}", 120)
    painted = await page.evaluate(FIRST_PAINT)
    return float(rendered) / 1000, (float(painted) / 1000 if painted else None)


async def answer_sizes(url: str, token: str) -> dict[str, int]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        fleet = await client.get("/api/v1/fleet")
        status = await client.get("/api/v1/status")
    fleet.raise_for_status()
    status.raise_for_status()
    return {"fleet": len(fleet.content), "status": len(status.content)}


async def run(mode: Mode) -> FigureResult:
    clusters = mode.clusters or (QUICK_CLUSTERS if mode.quick else FULL_CLUSTERS)
    chromium = find_chromium()
    if chromium is None:
        return FigureResult(
            key=KEY,
            title=TITLE,
            targets=TARGETS,
            not_measured="no Chromium (scripts/install-browser.sh, or $FLEETBUS_CHROMIUM)",
        )
    notes: list[str] = []
    extra: dict[str, Any] = {"clusters": clusters}
    loads: list[tuple[float, float | None]] = []
    idle: dict[str, float] = {}
    after_update: dict[str, float] = {}
    sizes: dict[str, int] = {}
    live_s: float | None = None
    failure = ""
    try:
        async with running_fleet(
            clusters, leaf_edges=0, sim_processes=min(SIM_PROCESSES, clusters)
        ) as fleet:
            first = await converge(fleet, within=CONVERGE_S)
            if not first.complete:
                raise HubFailed(
                    f"{len(first.latencies):,} of {clusters:,} clusters applied within "
                    f"{CONVERGE_S:.0f} s"
                )
            url = str(fleet.hub.data.read_hub_info()["http_url"])
            token = (fleet.hub.data.root / "admin.token").read_text().strip()
            sizes = await answer_sizes(url, token)
            with tempfile.TemporaryDirectory(prefix="fleetbus-bench-chromium-") as profile:
                async with Browser.launch(chromium, Path(profile)) as browser:
                    page = await browser.new_page()
                    await page.call("Performance.enable")
                    await page.goto(url + "/")
                    await page.wait_for("document.getElementById('login').open")
                    await page.evaluate(
                        f"sessionStorage.setItem('fleetbus.token', {token!r}); true"
                    )
                    for _ in range(max(3, mode.repeats)):
                        loads.append(await load_fleet_page(page))
                    idle = await page_metrics(page)
                    started = time.monotonic()
                    second = await converge(fleet, within=CONVERGE_S)
                    if second.complete:
                        await page.wait_for(
                            "(b => b && Number(b.dataset.count) >= "
                            f"{clusters})(document.querySelector("
                            "'#fleet-states [data-state=applied]'))",
                            60,
                        )
                        live_s = time.monotonic() - started
                    after_update = await page_metrics(page)
    except (HubFailed, DevToolsError, AssertionError, httpx.HTTPError) as e:
        failure = str(e).splitlines()[0]
    mib = 1024 * 1024
    metrics = [
        Metric(
            key="meaningful_paint_s",
            label=f"fleet page rendered (summary, filters, first page), {clusters:,} clusters",
            unit="s",
            value=median([m for m, _ in loads]) if loads else None,
            runs=[m for m, _ in loads],
            missing=failure,
        ),
        Metric(
            key="first_contentful_paint_s",
            label="first contentful paint (Chromium)",
            unit="s",
            value=median([p for _, p in loads if p is not None]) if loads else None,
            runs=[p for _, p in loads if p is not None],
            missing=failure,
        ),
        Metric(
            key="js_heap_mb",
            label="page JavaScript heap after load (after GC)",
            unit="MB",
            value=idle["JSHeapUsedSize"] / mib if idle else None,
            missing=failure,
        ),
        Metric(
            key="dom_nodes",
            label="DOM nodes of the page",
            unit="",
            value=idle.get("Nodes"),
            missing=failure,
        ),
        Metric(
            key="js_heap_after_update_mb",
            label=f"page JavaScript heap after following an update to {clusters:,} clusters live",
            unit="MB",
            value=after_update["JSHeapUsedSize"] / mib if after_update else None,
            missing=failure,
        ),
        Metric(
            key="fleet_answer_kb",
            label="`/api/v1/fleet` answer (summary and one page of 50 clusters)",
            unit="KB",
            value=sizes["fleet"] / 1024 if sizes else None,
            missing=failure,
        ),
        Metric(
            key="status_answer_kb",
            label="`/api/v1/status` answer (the whole matrix), for comparison",
            unit="KB",
            value=sizes["status"] / 1024 if sizes else None,
            missing=failure,
        ),
    ]
    if live_s is not None:
        notes.append(
            f"While the page was open, a second version reached all {clusters:,} clusters; "
            f"its counts showed every cluster applied {live_s:.1f} s after the publish, with "
            "no reload (the live event stream refreshes the counts and the rows shown at most "
            "once a second, and the feed takes events in batches, once per frame)."
        )
    if failure:
        notes.insert(0, f"Not measured: {failure}")
    method = (
        f"`fleetbus up --no-scheduler --sim-clusters {clusters:,}` with `fleetbus scheduler`, "
        "one taskset applied on every cluster; headless Chromium (1440 by 900 pixels) signs in "
        f"and reloads the fleet page {len(loads) or 3} times (cache bypassed). The fleet page asks "
        "`/api/v1/fleet` for the summary and one page of 50 clusters; it holds no row per "
        "cluster of the fleet."
    )
    if clusters != FULL_CLUSTERS:
        method += f" Run at {clusters:,} clusters (`--clusters`)."
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra=extra,
    )
