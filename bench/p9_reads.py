"""P9 — Reads: what the hub's API answers per second, and how fast, at 200 concurrent clients.

A hub with 1,000 simulated clusters (`fleetbus up --sim-clusters`) and one taskset applied on
every one of them, so the fleet matrix has 1,000 cells. Each read route is driven for a fixed
time by bombardier (an HTTP load generator in Go, built by `infra/loadgen/build.sh`; a Python
client would be what is measured) with 200 connections and the hub's admin token, against the
same hub, one route after the other:

- `GET /api/v1/status`: the fleet matrix (every cluster, every taskset, every cell);
- `GET /api/v1/status` with `If-None-Match` set to the ETag of the last answer: what a
  dashboard or `--watch` pays to learn nothing changed;
- `GET /api/v1/clusters`: every cluster with whether it is connected;
- `GET /api/v1/events?limit=50`: the newest page of the audit log.

Requests per second and latency percentiles are bombardier's own; a run with any error or any
answer other than 2xx/304 is reported as failed, not averaged in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.convergence import Fleet, converge, running_fleet
from bench.figure import FigureResult, Metric, Mode, Target
from bench.procstat import CLOCK_TICKS, cpu_ticks

KEY = "P9"
TITLE = "Reads: the API at 200 concurrent clients"
REPO = Path(__file__).resolve().parent.parent
BOMBARDIER = REPO / ".cache" / "loadgen" / "bin" / "bombardier"
CONNECTIONS = 200
TARGETS = [
    Target(
        metric="status_rps",
        label="`status` at 200 concurrent clients",
        bound=1000.0,
        unit="/s",
        better="higher",
    ),
    Target(
        metric="status_p99_s", label="`status` p99 at 200 concurrent clients", bound=0.2, unit="s"
    ),
]


@dataclass(frozen=True)
class Load:
    """One bombardier run: requests per second and latency percentiles (seconds)."""

    rps: float
    p50: float
    p99: float
    requests: int
    bytes_per_answer: int
    hub_cpu_per_request: float = 0.0
    """Seconds of the hub process's CPU per answered request: what the load on the machine
    does not change much, unlike the rate."""


@dataclass(frozen=True)
class Route:
    key: str
    label: str
    path: str
    conditional: bool = False


ROUTES = (
    Route("status", "`status` (the whole fleet matrix)", "/api/v1/status"),
    Route(
        "status_304",
        "`status`, unchanged (If-None-Match)",
        "/api/v1/status",
        conditional=True,
    ),
    Route("clusters", "`clusters`", "/api/v1/clusters"),
    Route("events", "`events`, newest 50", "/api/v1/events?limit=50"),
)


def fetch(url: str, token: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def drive(url: str, headers: dict[str, str], seconds: float) -> Load:
    """bombardier against `url` for `seconds` with `CONNECTIONS` connections."""
    args = [
        str(BOMBARDIER),
        "-c",
        str(CONNECTIONS),
        "-d",
        f"{seconds:g}s",
        "-t",
        "10s",
        "-l",
        "-p",
        "r",
        "-o",
        "json",
    ]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    finished = subprocess.run(
        [*args, url], capture_output=True, text=True, check=False, timeout=seconds + 120
    )
    if finished.returncode != 0:
        raise RuntimeError(f"bombardier failed: {finished.stderr.strip()[-300:]}")
    result: dict[str, Any] = orjson.loads(finished.stdout)["result"]
    failed = {
        key: result.get(key, 0)
        for key in ("req1xx", "req4xx", "req5xx", "others")
        if result.get(key, 0)
    }
    if failed:
        raise RuntimeError(f"{url}: answers other than 2xx/3xx: {failed} {result.get('errors')}")
    done = int(result["req2xx"]) + int(result["req3xx"])
    percentiles = result["latency"]["percentiles"]
    return Load(
        rps=float(result["rps"]["mean"]),
        p50=float(percentiles["50"]) / 1e6,
        p99=float(percentiles["99"]) / 1e6,
        requests=done,
        bytes_per_answer=int(result.get("bytesRead", 0)) // max(done, 1),
    )


async def cells_ready(base: str, token: str, clusters: int, within: float) -> dict[str, str]:
    """Wait until the status matrix shows every cluster's cell; its answer's headers."""
    deadline = time.monotonic() + within
    while True:
        _, headers, body = await asyncio.to_thread(fetch, f"{base}/api/v1/status", token)
        cells = orjson.loads(body)["cells"]
        if len(cells) >= clusters:
            return headers
        if time.monotonic() > deadline:
            raise RuntimeError(f"the status matrix shows {len(cells)} of {clusters} cells")
        await asyncio.sleep(1.0)


async def measure(clusters: int, seconds: float) -> dict[str, Load]:
    async with running_fleet(clusters) as fleet:
        first = await converge(fleet, within=180.0)
        if not first.complete:
            raise RuntimeError(f"{len(first.latencies)} of {clusters} clusters applied")
        base = str(fleet.hub.data.read_hub_info()["http_url"]).rstrip("/")
        token = (fleet.hub.data.root / "admin.token").read_text().strip()
        headers = await cells_ready(base, token, clusters, within=120.0)
        await settle(fleet)
        loads: dict[str, Load] = {}
        for route in ROUTES:
            request_headers = {"Authorization": f"Bearer {token}"}
            if route.conditional:
                etag = headers.get("ETag") or headers.get("etag")
                if not etag:
                    raise RuntimeError("`status` answers without an ETag")
                request_headers["If-None-Match"] = etag
            before = cpu_ticks(fleet.hub.hub.pid)
            load = await asyncio.to_thread(drive, base + route.path, request_headers, seconds)
            used = (cpu_ticks(fleet.hub.hub.pid) - before) / CLOCK_TICKS
            loads[route.key] = dataclasses.replace(
                load, hub_cpu_per_request=used / max(load.requests, 1)
            )
        return loads


async def settle(fleet: Fleet) -> None:
    """Let the fleet's reports quiet down so the reads are measured, not the convergence."""
    with contextlib.suppress(Exception):
        fleet.hub.check()
    await asyncio.sleep(5.0)


async def run(mode: Mode) -> FigureResult:
    clusters = 100 if mode.quick else 1000
    seconds = 3.0 if mode.quick else 10.0
    if not BOMBARDIER.exists():
        return FigureResult(
            key=KEY,
            title=TITLE,
            metrics=[],
            targets=TARGETS,
            not_measured="bombardier is not built: run `make loadgen` (`make bench` does)",
        )
    loads = await measure(clusters, seconds)
    metrics: list[Metric] = []
    for route in ROUTES:
        load = loads[route.key]
        metrics += [
            Metric(
                key=f"{route.key}_rps",
                label=f"{route.label}: requests/s",
                unit="/s",
                value=load.rps,
                better="higher",
            ),
            Metric(key=f"{route.key}_p50_s", label=f"{route.label}: p50", unit="s", value=load.p50),
            Metric(key=f"{route.key}_p99_s", label=f"{route.label}: p99", unit="s", value=load.p99),
            Metric(
                key=f"{route.key}_cpu_s",
                label=f"{route.label}: hub CPU per request",
                unit="s",
                value=load.hub_cpu_per_request,
            ),
            Metric(
                key=f"{route.key}_bytes",
                label=f"{route.label}: bytes per answer",
                unit="B",
                value=float(load.bytes_per_answer),
            ),
        ]
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=(
            f"One hub with {clusters:,} clusters (4 leaf edges, the rest simulated in the hub's "
            "worker processes) and `fleetbus scheduler`; one taskset published to every cluster "
            "and applied everywhere first. Then each route for "
            f"{seconds:g} s with bombardier: {CONNECTIONS} connections, keep-alive, the hub's "
            "admin token; the load generator shares the machine's two cores with the hub."
        ),
        notes=[
            "What bounds it: the hub's API runs in one Python process (Litestar on uvicorn) "
            "beside its projector and the simulated clusters' worker processes; every answer "
            "checks the bearer token."
        ],
    )
