"""The dashboard on a fleet too large for one table: headless Chromium on
`fleetbus up --sim-clusters 600`.

The fleet page shows the whole fleet's counts and one page of 50 clusters, never a row per
cluster; filters and paging are answered by the hub (the URL carries them); a publish to every
cluster shows up live, counts and rows changing in place, with no reload and without disturbing
what is being typed in the filter bar. The time to a meaningful paint and the page's memory at
10,000 clusters are benchmark figures (P13), not asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.browser import Browser, Page, find_chromium
from tests.e2e.test_dashboard_browser import ARTIFACTS, fleetbus_up, publish

CLUSTERS = 600
PAGE = 50
NAMES = sorted(f"sim-{i}" for i in range(1, CLUSTERS + 1))
ROWS = "[...document.querySelectorAll('#matrix tbody tr')].map(r => r.dataset.cluster)"


def rows_are(names: list[str]) -> str:
    return f"JSON.stringify({ROWS}) === JSON.stringify({json.dumps(names)})"


async def sign_in(page: Page, url: str, token: str) -> None:
    await page.goto(url + "/")
    await page.wait_for("document.getElementById('login').open")
    await page.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('login-form').requestSubmit(); true"
    )
    await page.wait_for("document.body.dataset.ready === 'true'")


async def type_into(page: Page, name: str, text: str) -> None:
    """Focus a filter field, set its text and fire `input`, as typing would."""
    await page.evaluate(
        f"(f => {{ f.focus(); f.value = {json.dumps(text)};"
        " f.dispatchEvent(new Event('input', {bubbles: true})); return true; })"
        f"(document.querySelector('#fleet-filters [name={name}]'))"
    )


@pytest.mark.timeout(300)
async def test_the_fleet_page_summarizes_pages_and_filters_a_large_fleet_live(
    tmp_path: Path,
) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.fail(
            "no Chromium: run scripts/install-browser.sh (make test does), or set FLEETBUS_CHROMIUM"
        )
    async with (
        fleetbus_up(tmp_path / "hub", CLUSTERS) as (url, token),
        Browser.launch(chromium, tmp_path / "chromium-profile") as browser,
    ):
        page = await browser.new_page()
        await sign_in(page, url, token)
        await page.wait_for(rows_are(NAMES[:PAGE]))
        assert await page.evaluate("document.querySelector('[data-metric=clusters] b').textContent")
        assert await page.wait_for(
            "document.querySelector('[data-metric=clusters] b').textContent === '600'"
        )
        pager = await page.evaluate("({...document.getElementById('pager').dataset})")
        assert pager == {"total": "600", "page": "1", "pages": "12"}
        elements = await page.evaluate("document.getElementsByTagName('*').length")
        assert elements < 2_500, f"{elements} elements: the page holds one page of clusters"
        loads = await page.evaluate("performance.getEntriesByType('navigation').length")

        await publish(url, token, "greeting", "fleetbus.io/sim=true")
        applied = await page.wait_for(
            "(b => b && b.dataset.count === '600' && b.dataset.count)"
            "(document.querySelector('#fleet-states [data-state=applied]'))",
            within=180,
        )
        assert applied == "600"
        states = await page.wait_for(
            "(s => s.length === 50 && s.every(x => x === 'applied') && s)"
            "([...document.querySelectorAll('#matrix td[data-taskset=\"greeting\"] .cell')]"
            ".map(c => c.dataset.state))"
        )
        assert len(states) == PAGE
        assert await page.evaluate("performance.getEntriesByType('navigation').length") == loads
        await page.screenshot(ARTIFACTS / "dashboard-fleet-600.png")

        await type_into(page, "q", "sim-59")
        expected = sorted(n for n in NAMES if "sim-59" in n)
        await page.wait_for(rows_are(expected))
        assert await page.evaluate("location.hash") == "#/?q=sim-59"
        focused = await page.evaluate("[document.activeElement.name, document.activeElement.value]")
        assert focused == ["q", "sim-59"], "the field being typed in is left alone"
        assert await page.evaluate("document.getElementById('pager').dataset.total") == str(
            len(expected)
        )

        await page.evaluate("location.hash = '#/?page=2'; true")
        await page.wait_for(rows_are(NAMES[PAGE : 2 * PAGE]))
        assert await page.evaluate("document.querySelector('#fleet-filters [name=q]').value") == ""
        await page.evaluate("document.querySelector('#pager a[rel=next]').click(); true")
        await page.wait_for(rows_are(NAMES[2 * PAGE : 3 * PAGE]))
        assert await page.evaluate("location.hash") == "#/?page=3"

        await page.evaluate(
            "(s => { s.value = 'failed'; s.dispatchEvent(new Event('change')); return true; })"
            "(document.querySelector('#fleet-filters [name=state]'))"
        )
        await page.wait_for("!!document.getElementById('no-match')")
        assert await page.evaluate("location.hash") == "#/?state=failed"
        await page.evaluate(
            "document.querySelector('#fleet-states [data-state=applied]').click(); true"
        )
        await page.wait_for(rows_are(NAMES[:PAGE]))
        assert await page.evaluate("location.hash") == "#/?state=applied"

        await type_into(page, "selector", "env in")
        error = await page.wait_for("document.getElementById('fleet-error')?.textContent")
        assert "invalid selector 'env in'" in error
        assert await page.evaluate("!!document.getElementById('fleet-filters')"), "kept to fix"
        await type_into(page, "selector", "env in (dev)")
        expected_dev = sorted(n for n in NAMES if int(n.removeprefix("sim-")) % 2)
        await page.wait_for(rows_are(expected_dev[:PAGE]))
        assert await page.evaluate("performance.getEntriesByType('navigation').length") == loads
