"""P5 — the edge connector's footprint: memory and idle CPU with 100 tasksets applied.

One registered cluster runs `fleetbus edge` (connector plus its leaf nats-server) against a
real hub; 100 small tasksets (a Namespace and a ConfigMap each) are published to it and waited
for, then the connector is left idle and its CPU time is sampled from /proc. Measured twice:
with the in-memory simulator, and with the Kubernetes executor against a real kube-apiserver
(infra/envtest) with `fleetbus controller` reconciling the Task resources beside it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.envtest import EnvtestUnavailable, kube_apiserver
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import HubFailed
from bench.procstat import sample_idle
from bench.single_edge import single_edge, small_taskset

KEY = "P5"
TITLE = "Edge connector footprint with 100 tasksets applied"
TARGETS = [
    Target(metric="rss_mb", label="connector RSS (simulator)", bound=60, unit="MB"),
    Target(
        metric="idle_cpu_pct",
        label="connector idle CPU (simulator)",
        bound=1.0,
        unit="%",
        strict=True,
    ),
    Target(metric="kube_rss_mb", label="connector RSS (Kubernetes executor)", bound=60, unit="MB"),
    Target(
        metric="kube_idle_cpu_pct",
        label="connector idle CPU (Kubernetes executor)",
        bound=1.0,
        unit="%",
        strict=True,
    ),
]
TASKSETS = 100
SETTLE_S = 10.0


async def footprint(mode: Mode, kubeconfig: Path | None) -> dict[str, float]:
    idle_window = 10.0 if mode.quick else 30.0
    async with single_edge(kubeconfig) as edge:
        sources = [small_taskset(f"app-{i:03d}") for i in range(TASKSETS)]
        await edge.publish_all(sources, within=240.0 if kubeconfig is None else 420.0)
        await asyncio.sleep(SETTLE_S)
        watched = [edge.edge.pid] + ([edge.controller.pid] if edge.controller else [])
        samples = await asyncio.gather(*(sample_idle(pid, idle_window) for pid in watched))
        measured = {
            "rss": samples[0].rss_mib,
            "idle_cpu": samples[0].cpu_pct,
            "leaf_rss": edge.edge.children_rss_mib(),
        }
        if len(samples) > 1:
            measured["controller_rss"] = samples[1].rss_mib
            measured["controller_idle_cpu"] = samples[1].cpu_pct
        return measured


async def run(mode: Mode) -> FigureResult:
    results: dict[str, dict[str, float]] = {}
    failures: dict[str, str] = {}
    try:
        results["sim"] = await footprint(mode, None)
    except HubFailed as e:
        failures["sim"] = str(e).splitlines()[0]
    if mode.quick:
        failures["kube"] = "quick mode measures the simulator only"
    else:
        try:
            async with kube_apiserver() as kubeconfig:
                results["kube"] = await footprint(mode, kubeconfig)
        except (HubFailed, EnvtestUnavailable) as e:
            failures["kube"] = str(e).splitlines()[0]

    def value(kind: str, key: str) -> float | None:
        return results.get(kind, {}).get(key)

    metrics = []
    for kind, prefix, text in (("sim", "", "simulator"), ("kube", "kube_", "Kubernetes executor")):
        why = failures.get(kind, "")
        metrics += [
            Metric(
                key=f"{prefix}rss_mb",
                label=f"connector RSS, {text}",
                unit="MB",
                value=value(kind, "rss"),
                missing=why,
            ),
            Metric(
                key=f"{prefix}idle_cpu_pct",
                label=f"connector idle CPU (share of one core), {text}",
                unit="%",
                value=value(kind, "idle_cpu"),
                missing=why,
            ),
            Metric(
                key=f"{prefix}leaf_rss_mb",
                label=f"its leaf nats-server RSS, {text}",
                unit="MB",
                value=value(kind, "leaf_rss"),
                missing=why,
            ),
        ]
    metrics += [
        Metric(
            key="controller_rss_mb",
            label="fleetbus controller RSS beside the Kubernetes executor",
            unit="MB",
            value=value("kube", "controller_rss"),
            missing=failures.get("kube", ""),
        ),
        Metric(
            key="controller_idle_cpu_pct",
            label="fleetbus controller idle CPU (share of one core)",
            unit="%",
            value=value("kube", "controller_idle_cpu"),
            missing=failures.get("kube", ""),
        ),
    ]
    window = 10 if mode.quick else 30
    method = (
        f"{TASKSETS} tasksets (a Namespace and a ConfigMap each) published with "
        "`publish_taskset` to one cluster registered with `fleetbus cluster register` whose "
        "edge runs as `fleetbus edge` (`--sim`, then `--kubeconfig` against kube-envtest with "
        "`fleetbus controller` beside it), against `fleetbus up` and `fleetbus scheduler`. "
        f"Once all {TASKSETS} are reported applied and {SETTLE_S:.0f} s have passed, the "
        f"connector process's CPU time is sampled over {window} s (utime+stime from /proc, as "
        "a share of one core) and its resident memory (VmRSS) read; its leaf nats-server is "
        "reported separately."
    )
    notes = [f"Not measured ({kind}): {why}" for kind, why in failures.items()]
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra={"tasksets": TASKSETS},
    )
