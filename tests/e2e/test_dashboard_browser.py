"""The dashboard in a real browser: headless Chromium on `fleetbus up --sim-clusters 3`.

Chromium is the one `scripts/install-browser.sh` finds or installs (`make test` runs it:
$FLEETBUS_CHROMIUM, else chromium on PATH, else Debian's package when root), driven over the
DevTools protocol with `websockets`: no browser download, no driver binary. The test signs in
with the hub's admin token, sees the three simulated clusters in the fleet matrix, publishes a
taskset through the API, and sees the matrix change with no reload (the live event stream
refreshes it) until every cluster runs the new version. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.browser import Browser, find_chromium
from events.catalog import DriftCorrected, DriftDetected
from events.ids import new_event_id
from events.store import EventStore, connect
from events.streams import REPORTS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.natsserver import free_port
from fleetbus.probes import fleetbus_version
from tests.source_servers import HelmRepository, helm_repository, make_chart

__all__ = ["helm_repository"]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SIM_CLUSTERS = ["sim-1", "sim-2", "sim-3"]
CONFIGMAP = b"""apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
  namespace: demo
data:
  message: hello fleet
"""


@contextlib.asynccontextmanager
async def fleetbus_up(
    data_dir: Path, sim_clusters: int, *extra: str
) -> AsyncIterator[tuple[str, str]]:
    """`fleetbus up` as a child process; yields the API URL and the admin token."""
    http_port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetbus.cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--http",
        f"127.0.0.1:{http_port}",
        "--nats-port",
        str(free_port()),
        "--leaf-port",
        str(free_port()),
        "--leaf-host",
        "127.0.0.1",
        "--sim-clusters",
        str(sim_clusters),
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{http_port}"
    output = bytearray()

    async def collect() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            output.extend(chunk)

    collector = asyncio.create_task(collect())
    try:
        async with asyncio.timeout(90), httpx.AsyncClient() as client:
            while True:
                if process.returncode is not None:
                    raise AssertionError(f"fleetbus up exited:\n{output.decode()[-4000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.2)
        token = (await asyncio.to_thread((data_dir / "admin.token").read_text)).strip()
        yield url, token
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()
        await collector


async def publish(url: str, token: str, name: str, selector: str) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        response = await client.post(
            "/api/v1/tasksets",
            data={
                "spec": json.dumps(
                    {"name": name, "namespace": "demo", "placement": {"selector": selector}}
                )
            },
            files={"source": ("greeting.yaml", CONFIGMAP, "application/yaml")},
        )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


MATRIX_CLUSTERS = "[...document.querySelectorAll('#matrix tbody tr')].map(r => r.dataset.cluster)"


def cell_states(taskset: str) -> str:
    return (
        f"[...document.querySelectorAll('#matrix td[data-taskset=\"{taskset}\"] .cell')]"
        ".map(c => c.dataset.state)"
    )


@pytest.mark.timeout(240)
async def report_drift(data_dir: Path, cluster: str, taskset: str) -> None:
    """The cluster reports drift detected, then corrected, on its own report subjects."""
    data = DataDir(data_dir)
    nc = await connect(data.read_hub_info()["nats_url"], credentials=data.hub_credentials)
    reports = EventStore(nc, stream=REPORTS_STREAM)
    try:
        now = datetime.now(UTC)
        detected = DriftDetected(
            id=new_event_id(),
            occurred_at=now,
            actor=f"cluster:{cluster}",
            cluster=cluster,
            taskset=taskset,
            taskset_version=1,
            generation=1,
            object="ConfigMap/default/greeting",
            fields=["data.text"],
        )
        corrected = DriftCorrected(
            id=new_event_id(),
            occurred_at=now,
            actor=f"cluster:{cluster}",
            causation_id=detected.id,
            cluster=cluster,
            taskset=taskset,
            taskset_version=1,
            generation=1,
            object="ConfigMap/default/greeting",
        )
        await reports.append([detected])
        await reports.append([corrected])
    finally:
        await reports.close()


async def test_the_dashboard_shows_the_fleet_and_follows_a_publish_live(tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.fail(
            "no Chromium: run scripts/install-browser.sh (make test does), or set FLEETBUS_CHROMIUM"
        )
    async with (
        fleetbus_up(tmp_path / "hub", len(SIM_CLUSTERS)) as (url, token),
        Browser.launch(chromium, tmp_path / "chromium-profile") as browser,
    ):
        page = await browser.new_page()
        await page.goto(url + "/")
        await page.wait_for("document.getElementById('login').open")
        await page.evaluate(
            f"document.getElementById('token').value = {json.dumps(token)};"
            "document.getElementById('login-form').requestSubmit(); true"
        )
        await page.wait_for("document.body.dataset.ready === 'true'")
        assert await page.wait_for(
            f"JSON.stringify({MATRIX_CLUSTERS}) === JSON.stringify({json.dumps(SIM_CLUSTERS)})"
        )
        assert await page.evaluate("sessionStorage.getItem('fleetbus.token')") == token
        assert await page.wait_for("document.getElementById('live').textContent === 'live'")
        page_loads = await page.evaluate("performance.getEntriesByType('navigation').length")

        result = await publish(url, token, "greeting", "fleetbus.io/sim=true")
        assert result["version"] == 1

        await page.wait_for("!!document.querySelector('#matrix th[data-taskset=\"greeting\"]')")
        states = await page.wait_for(
            "(s => s.length === 3 && s.every(x => x === 'applied') && s)"
            f"({cell_states('greeting')})",
            within=90,
        )
        assert states == ["applied", "applied", "applied"]
        feed = await page.evaluate(
            "[...document.querySelectorAll('#feed .feed-item')].map(i => i.dataset.type)"
        )
        assert "TasksetPublished" in feed
        assert "TaskApplied" in feed
        assert await page.evaluate("performance.getEntriesByType('navigation').length") == (
            page_loads
        ), "the matrix changed without a reload"
        assert token not in await page.evaluate("document.body.innerText"), "token never shown"
        edge_lines = await page.wait_for(
            "(s => s.length === 3 && s.every(x => x.startsWith('edge ') && x.endsWith(' · ready'))"
            " && s)([...document.querySelectorAll('#matrix tbody .row-head .edge')]"
            ".map(e => e.textContent))"
        )
        assert edge_lines == [f"edge {fleetbus_version()} · ready"] * 3
        controllers = await page.evaluate(
            "[...document.querySelectorAll('#matrix tbody .row-head .controller')]"
            ".map(e => e.textContent)"
        )
        assert controllers == ["controller: not reported"] * 3, "simulated clusters have none"
        # The fleet's event rate: the publish, its scheduling and the three reports, in bars.
        rate = await page.wait_for(
            "(c => c && Number(c.dataset.total) >= 5 && c.querySelectorAll('rect.bar').length > 0"
            " && Number(c.dataset.total))(document.getElementById('chart-event-rate'))"
        )
        assert rate >= 5
        await page.screenshot(ARTIFACTS / "dashboard-fleet.png")

        await page.evaluate("location.hash = '#/taskset/greeting'; true")
        await page.wait_for("!!document.querySelector('.waves .wave')")
        await page.wait_for(
            "document.querySelector('.progress-text')?.textContent === '3/3 applied'"
        )
        # Convergence over time: three clusters applied, none failed, the waves marked.
        converged = await page.wait_for(
            "(c => c && c.dataset.applied === '3' && [c.dataset.applied, c.dataset.failed,"
            " c.dataset.waves, c.querySelectorAll('line.wave').length,"
            " c.querySelector('path.series.applied').getAttribute('d')])"
            "(document.getElementById('chart-convergence'))"
        )
        assert converged[:2] == ["3", "0"]
        assert int(converged[2]) >= 1
        assert converged[3] == int(converged[2]), "one marker per wave"
        assert converged[4].count(" L ") >= 4, "a step per cluster that converged"
        await page.screenshot(ARTIFACTS / "dashboard-taskset.png")

        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            stack: dict[str, Any] = {
                "name": "base",
                "selector": "fleetbus.io/sim=true",
                "entries": [{"taskset": "greeting"}],
            }
            answer = await client.post("/api/v1/blueprints", json={"blueprint": stack})
        assert answer.status_code == 200, answer.text
        await page.evaluate("location.hash = '#/blueprint/base'; true")
        sync = await page.wait_for(
            "(s => s.length === 3 && s.every(x => x === 'in_sync') && s)"
            "([...document.querySelectorAll('#blueprint-clusters tbody tr')]"
            ".map(r => r.dataset.state))",
            within=90,
        )
        assert sync == ["in_sync", "in_sync", "in_sync"]
        await page.screenshot(ARTIFACTS / "dashboard-blueprint.png")

        await page.evaluate("location.hash = '#/cluster/sim-2'; true")
        await page.wait_for("document.querySelector('h1 code')?.textContent === 'sim-2'")
        await page.wait_for("document.querySelectorAll('table.list tbody tr').length > 0")
        health = await page.evaluate("document.querySelector('dd.edge-health').textContent")
        assert "connected to the hub" in health
        assert "caught up" in health
        controller = await page.evaluate(
            "document.querySelector('dd.controller-health').textContent"
        )
        assert controller == "controller: not reported"
        assert await page.wait_for("document.getElementById('chart-drift')?.dataset.points === '0'")
        # sim-2 reports drift found and corrected: the timeline shows both, live.
        await report_drift(tmp_path / "hub", "sim-2", "greeting")
        points = await page.wait_for(
            "(c => c && c.dataset.points === '2' && [c.dataset.detected, c.dataset.corrected,"
            " c.querySelectorAll('circle.point').length])(document.getElementById('chart-drift'))"
        )
        assert points == ["1", "1", 2]
        await page.screenshot(ARTIFACTS / "dashboard-cluster.png")

        await page.evaluate("location.hash = '#/events'; true")
        await page.wait_for("document.querySelectorAll('table.events tbody tr').length >= 8")
        types = await page.evaluate(
            "[...document.querySelectorAll('table.events tbody tr td:nth-child(3)')]"
            ".map(td => td.textContent)"
        )
        assert "TasksetPublished" in types
        await page.screenshot(ARTIFACTS / "dashboard-events.png")

        # `?project=` shows one project: its own cluster, none of the default project's.
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            made = await client.post("/api/v1/projects", json={"name": "team-a"})
            assert made.status_code == 201, made.text
            joined = await client.post(
                "/api/v1/clusters",
                json={"name": "east", "labels": {}},
                headers={"X-Fleetbus-Project": "team-a"},
            )
            assert joined.status_code == 201, joined.text
        await page.goto(url + "/?project=team-a#/")
        await page.wait_for("document.body.dataset.ready === 'true'")
        assert await page.wait_for(
            f"JSON.stringify({MATRIX_CLUSTERS}) === JSON.stringify(['team-a--east'])"
        )
        who = await page.wait_for(
            "(t => t.endsWith('(admin in team-a)') && t)"
            "(document.getElementById('who').textContent)"
        )
        assert who == "admin (admin in team-a)"
    shot = await asyncio.to_thread((ARTIFACTS / "dashboard-fleet.png").stat)
    assert shot.st_size > 10_000


@pytest.mark.timeout(240)
async def test_the_taskset_page_shows_where_each_version_came_from(
    tmp_path: Path, helm_repository: HelmRepository
) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.fail(
            "no Chromium: run scripts/install-browser.sh (make test does), or set FLEETBUS_CHROMIUM"
        )
    helm_repository.add(make_chart(tmp_path / "src", "web", "1.4.2"))
    async with (
        fleetbus_up(tmp_path / "hub", 1, "--source-host", "127.0.0.1") as (url, token),
        Browser.launch(chromium, tmp_path / "chromium-profile") as browser,
    ):
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            remote = {"kind": "helm-repo", "url": helm_repository.url, "chart": "web"}
            answer = await client.post(
                "/api/v1/tasksets/remote",
                json={"source": remote, "placement": {"clusters": ["sim-1"]}},
            )
            assert answer.status_code == 201, answer.text
            digest = answer.json()["provenance"]["digest"]
        page = await browser.new_page()
        await page.goto(url + "/")
        await page.wait_for("document.getElementById('login').open")
        await page.evaluate(
            f"document.getElementById('token').value = {json.dumps(token)};"
            "document.getElementById('login-form').requestSubmit(); true"
        )
        await page.wait_for("document.body.dataset.ready === 'true'")
        await page.evaluate("location.hash = '#/taskset/web'; true")
        expected = f"helm-repo {helm_repository.url} chart web 1.4.2 ({digest[:19]})"
        shown = await page.wait_for(
            "(t => t.length === 2 && t)"
            "([...document.querySelectorAll('.provenance')].map(e => e.textContent))"
        )
        assert shown == [expected, expected], "the taskset's facts and its version row"
        await page.screenshot(ARTIFACTS / "dashboard-taskset-provenance.png")
