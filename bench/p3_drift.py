"""P3 — drift: someone edits a managed object on the cluster; how long until it is corrected.

On a real kube-apiserver (infra/envtest), one taskset (a Namespace and a ConfigMap) is
delivered through the whole loop: hub, scheduler, `fleetbus edge --kubeconfig` (the Kubernetes
executor and the cluster controller in one process). The benchmark then watches the ConfigMap
and edits its data as another field manager would, again and again. Each edit gives two times
from the same watch: when the edit itself came back as a watch event (the apiserver's own
latency: the raw baseline) and when the controller's correction did (our drift loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from lightkube import AsyncClient, KubeConfig
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from bench.envtest import EnvtestUnavailable, kube_apiserver
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import HubFailed
from bench.single_edge import single_edge, small_taskset
from bench.summary import percentile, ratio, spread

KEY = "P3"
TITLE = "Drift: edit of a managed object → corrected (real kube-apiserver)"
TARGETS = [
    Target(metric="p99_s", label="drift corrected, p99", bound=1.0, unit="s"),
    Target(
        metric="ratio_to_watch",
        label="p99 drift correction ÷ p99 raw watch event",
        bound=2.0,
        unit="x",
    ),
]
TASKSET = "drift-probe"
NAMESPACE = f"ns-{TASKSET}"
DESIRED = "1"
EDIT_TIMEOUT_S = 30.0


FLOOR_NOTE = (
    "What bounds the ratio: the correction is timed on the benchmark's own watch, so it takes "
    "the edit's watch event to the controller, one apply, and the correction's watch event "
    "back to the benchmark: about twice the raw figure plus one apply, whatever the "
    "controller does in between. Between the event and the apply the controller now reads "
    "nothing and dry-runs nothing when the managed fields prove the drift (an edit by another "
    "manager, as here), and checks drift before walking the Task's phases."
)


class DriftNotCorrected(RuntimeError):
    pass


async def edits(kubeconfig: Path, count: int) -> tuple[list[float], list[float]]:
    """(edit → its own watch event, edit → corrected) in seconds, for `count` edits."""
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager="bench-editor")
    seen: asyncio.Queue[tuple[float, str]] = asyncio.Queue()

    async def watch() -> None:
        async for _, obj in client.watch(
            ConfigMap, namespace=NAMESPACE, fields={"metadata.name": "settings"}
        ):
            await seen.put((time.monotonic(), (obj.data or {}).get("mode", "")))

    watcher = asyncio.create_task(watch(), name="bench-drift-watch")
    raw: list[float] = []
    corrected: list[float] = []
    try:
        await _wait_for_value(seen, DESIRED, time.monotonic() + EDIT_TIMEOUT_S)
        for index in range(count):
            drifted = f"edited-{index}"
            started = time.monotonic()
            await client.patch(
                ConfigMap,
                "settings",
                {"data": {"mode": drifted}},
                namespace=NAMESPACE,
                patch_type=PatchType.MERGE,
            )
            deadline = started + EDIT_TIMEOUT_S
            raw.append(await _wait_for_value(seen, drifted, deadline) - started)
            corrected.append(await _wait_for_value(seen, DESIRED, deadline) - started)
            await asyncio.sleep(0.2)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await client.close()
    return raw, corrected


async def _wait_for_value(
    seen: asyncio.Queue[tuple[float, str]], value: str, deadline: float
) -> float:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriftNotCorrected(f"the ConfigMap did not show mode={value!r} in time")
        try:
            at, current = await asyncio.wait_for(seen.get(), timeout=remaining)
        except TimeoutError:
            continue
        if current == value:
            return at


async def run(mode: Mode) -> FigureResult:
    count = 5 if mode.quick else 40
    raw: list[float] = []
    corrected: list[float] = []
    failure = ""
    try:
        async with kube_apiserver() as kubeconfig, single_edge(kubeconfig) as edge:
            await edge.publish_all([small_taskset(TASKSET, value=DESIRED)], within=180.0)
            raw, corrected = await edits(kubeconfig, count)
    except (HubFailed, EnvtestUnavailable, DriftNotCorrected) as e:
        failure = str(e).splitlines()[0]
    ours = spread(corrected) if corrected else None
    baseline = spread(raw) if raw else None
    metrics = [
        Metric(
            key="p50_s",
            label="edit → corrected, p50",
            unit="s",
            value=ours.p50 if ours else None,
            samples=ours,
            missing=failure,
        ),
        Metric(
            key="p99_s",
            label="edit → corrected, p99",
            unit="s",
            value=ours.p99 if ours else None,
            missing=failure,
        ),
        Metric(
            key="raw_p50_s",
            label="edit → its watch event (apiserver), p50",
            unit="s",
            value=baseline.p50 if baseline else None,
            samples=baseline,
            missing=failure,
        ),
        Metric(
            key="raw_p99_s",
            label="edit → its watch event (apiserver), p99",
            unit="s",
            value=baseline.p99 if baseline else None,
            missing=failure,
        ),
        Metric(
            key="ratio_to_watch",
            label="p99 ratio of correction to the raw watch event",
            unit="x",
            value=ratio(ours.p99, baseline.p99) if ours and baseline else None,
            missing=failure,
        ),
        Metric(
            key="ratio_to_watch_p50",
            label="p50 ratio of correction to the raw watch event",
            unit="x",
            value=ratio(percentile(corrected, 50), percentile(raw, 50)) if raw else None,
            missing=failure,
        ),
    ]
    method = (
        "kube-envtest (kube-apiserver and etcd, no controller-manager); `fleetbus up`, "
        "`fleetbus scheduler`, one cluster whose edge runs `fleetbus edge --kubeconfig` (the "
        "connector and the cluster controller in one process). The taskset (Namespace and "
        "ConfigMap) is published and applied; then the benchmark edits the ConfigMap's data "
        f"{count} times (a JSON merge patch under another field manager, as `kubectl edit` "
        "would), each time timing, on one watch of that ConfigMap, the edit's own event (raw "
        "baseline) and the event that restores the published value (correction)."
    )
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=[FLOOR_NOTE, *([f"Not measured: {failure}"] if failure else [])],
        extra={"edits": count},
    )
