"""P5 — the whole edge's footprint: memory and idle CPU with 100 tasksets and 1,000 objects.

The whole edge is every process a cluster runs: its leaf nats-server and the one fleetbus
process of `fleetbus edge --kubeconfig` (connector and cluster controller, as the edge chart
deploys them), against a real kube-apiserver (infra/envtest) and a real hub. Measured in steps,
so what grows with tasksets and with objects shows: started with nothing applied; 100 small
tasksets applied (a Namespace and a ConfigMap each: 200 objects); then 8 tasksets of 100
objects each, 1,000 managed objects in all. At each step, once settled, both processes' CPU time
is sampled from /proc and their resident memory read. The import cost of each module group of
the edge process is measured in fresh interpreters (`bench.edge_imports`). Quick mode measures
the simulator edge only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bench.edge_imports import import_costs, import_notes
from bench.envtest import EnvtestUnavailable, kube_apiserver
from bench.figure import FigureResult, Metric, Mode, Target
from bench.hubproc import Child, HubFailed
from bench.procstat import children_of, sample_idle
from bench.single_edge import SingleEdge, bulk_taskset, single_edge, small_taskset
from normalizer import NormalizedSource

KEY = "P5"
TITLE = "The whole edge's footprint: 100 tasksets, 1,000 managed objects"
BOUND_MB = 64
TARGETS = [
    Target(metric="rss_mb", label="whole edge RSS, 100 tasksets", bound=BOUND_MB, unit="MB"),
    Target(
        metric="idle_cpu_pct",
        label="whole edge idle CPU, 100 tasksets",
        bound=1.0,
        unit="%",
        strict=True,
    ),
    Target(
        metric="objects_rss_mb",
        label="whole edge RSS, 1,000 managed objects",
        bound=BOUND_MB,
        unit="MB",
    ),
    Target(
        metric="objects_idle_cpu_pct",
        label="whole edge idle CPU, 1,000 managed objects",
        bound=1.0,
        unit="%",
        strict=True,
    ),
]
TASKSETS = 100
BULK_TASKSETS = 8
BULK_OBJECTS = 100
"""Objects per bulk taskset: 100 tasksets of 2 objects and 8 of 100 make 1,000 managed objects."""
SETTLE_S = 10.0
FINDINGS = [
    "Before the one-process edge, a cluster ran three processes: the connector with the "
    "Kubernetes executor (52.4 MB), `fleetbus controller` (46.1 MB) and the leaf (21.5 MB),"
    " 120 MB with 100 tasksets (`make bench` of 2026-11-27, commit f6eb174).",
    "Leaving `metadata.managedFields` out of the controller's and the connector's caches "
    "took the whole edge at 1,000 objects from 103 MB to 92 MB during development (growth "
    "per object 21 → 13 KiB, per taskset 124 → 83 KiB). Handing freed heap back with "
    "glibc's `malloc_trim` every 30 s was tried and gained under 0.5 MB, so it was left "
    "out.",
    "Cuts measured during this build, whole edge started / 100 tasksets / 1,000 objects: "
    "before them 73.9 / 81.7 / 91.7 MB. Leaving `cryptography` out of the edge process "
    "(envelopes opened through the interpreter's libcrypto by `sealing.gcm`, the bundle "
    "certificate's names read with the standard library by `access.cert_names`) and the "
    "simulator and YAML writer loaded only where used: 64.1 / 70.5 / 80.5 MB (the imports "
    "from 48.2 to 39.2 MiB). The controller's informers holding each cached object as "
    "compact JSON (msgspec: orjson's bytes keep 4 to 16 KiB of spare capacity each) and "
    "indexing Steps by Task: the edge process's growth over 800 objects 9.1 → 5.8 MB in a "
    "separate run (tracemalloc: the traced growth per small taskset 36 → 20 KiB). One "
    "GOMAXPROCS for the leaf: about 0.7 MiB. Tried and left: the leaf's GOMEMLIMIT at 16MiB"
    " and GOGC 25 or 50 (no change: the leaf's own heap is 5 to 7 MiB; the rest of its RSS "
    "is program code).",
    "One watch and one cache of the Tasks for the connector and the controller (the "
    "controller's Task informer, instead of a second watch and copy in the connector's "
    "executor) and the connector's desired state held compact (steps and objects as "
    "compressed JSON, decoded only to apply), in two pairs of back-to-back runs on the same"
    " loaded machine: the edge process with 100 tasksets 47.8 → 47.5 and 47.5 → 47.5 MB "
    "(within the runs' noise), with 1,000 objects 53.8 → 53.0 and 53.7 → 52.9 MB; the whole"
    " edge with 100 tasksets 70.4 → 69.3 and 69.2 → 69.5 MB (the leaf varies by a MB from "
    "run to run). Idle CPU in those four runs (2026-12-07, 17:05 to 17:32 UTC, load average"
    " 3 to 9 from other work on the machine's 2 cores) was 0.87 to 1.30 % with either code,"
    " the edge process's share at start 0.63 % in both of the second pair; the run of 14:21"
    " measured 0.47 %. The controller's informer caches then compressed (zlib's fastest "
    "level: a small Task or Step to 40 to 50 % of its JSON), in the run below: the edge "
    "process 47.2 MB with 100 tasksets and 51.1 MB with 1,000 objects (from 47.5 and 52.9 "
    "MB), growth per managed object 8.8 → 7.0 KiB. tracemalloc before these changes (the "
    "edge process under `bench.traced`): of a traced growth of 22.9 KiB per small taskset, "
    "the controller's informer caches held 9.1 KiB (about 1.5 KiB per cached Task, Tasklet "
    "and Step, as compact JSON), the executor's second copy of the Task 2.5 KiB, the held "
    "ClusterTask 2.4 KiB, live objects kept from watch events for drift checks 1.2 KiB; the"
    " rest is client and retry state. The process's RSS grows by about 25 KiB per small "
    "taskset (2.5 MB over 100), the leaf's by 10 to 25 KiB (its JetStream mirror and "
    "outbox).",
    "The import table counts anyio (its total 39.2 → 42.8 MiB) with the Kubernetes executor"
    " since `kube_http` sets the network backend of the apiserver connections when the "
    "client is made; httpx2 loaded it before as well, when it made its connection pool at "
    "the edge's start, so the edge process's RSS at start is unchanged (44.8 and 44.9 MB in"
    " back-to-back runs).",
    "Idle CPU, found with cProfile over 20 s windows of the idle edge process and strace of"
    " both processes (20 tasksets): the connector's readiness check every second was most "
    "of it: a LIST of the controller's heartbeat Leases through the HTTP client (0.33 s of "
    "the 0.56 s of Python time in a profiled 20 s window), a new TCP connection to the "
    "leaf's monitoring port for /leafz and a mirror STREAM.INFO request, each also waking "
    "the leaf; and a new TLS connection for the controller's heartbeat every 10 s (httpx2 "
    "keeps idle connections 5 s). Now the in-process controller's health is read from the "
    "controller, /leafz goes over one kept connection, STREAM.INFO is asked only when the "
    "connector read something, something was behind, or every 15 s, and idle apiserver "
    "connections are kept 60 s: readiness takes 0.023 s of a profiled 20 s window. Idle CPU"
    " in P5 from 2.30 / 3.46 / 4.26 % (start / 100 tasksets / 1,000 objects, run of 18:30) "
    "to 0.67 / 0.70 / 0.70 % in the run below (load average 8 to 9 from other work on the "
    "machine; 0.67 / 0.73 / 0.93 % in a run 15 minutes before it), the edge process's share"
    " at 100 tasksets 2.23 → 0.33 %, the leaf's 1.23 → 0.37 %. What still wakes them is "
    "cheap: /leafz each second, nats-py's ordered consumer checking flow control every 0.25"
    " s and its heartbeat every 2 s, the controller's heartbeat check each second and "
    "renewal every 10 s; in the leaf, nats-server's own once-a-second sampling of its CPU "
    "and the mirror's heartbeats from the hub.",
    "Memory, the edge process run lean (`fleetbus.edge_process`): the edge's modules "
    "imported in a fresh interpreter 43.3 MiB as before; without `importlib.metadata` (its "
    "versions read from `.dist-info/METADATA`: no zipfile, csv, lzma, bz2) 42.6 MiB; with "
    "`-OO -X no_debug_ranges` as well 40.0 to 41.0 MiB (the import table above, 40.2 MiB, "
    "is measured that way). The edge process with 100 tasksets 47.0 → 44.4 MB (44.5 in the "
    "earlier run), at start 44.8 → 43.7 MB; the leaf 21.6 → 20.9 MB (21.8 in the earlier "
    "run: its run-to-run spread). Tried and left: `MALLOC_ARENA_MAX=1` (no change against "
    "2, which is kept for the helper threads), `PYTHONMALLOC=malloc` (+4.2 MiB), "
    "`gc.freeze()` (moves objects, frees none), GOGC 25 or 50 for the leaf and an outbox of"
    " 64 MiB instead of 1 GiB (a leaf given 100 desired-state messages and 300 reports "
    "standalone grew by 2.6 to 4.3 MiB whichever).",
    "Without lightkube, PyYAML and HTTP/2 in the edge process (the kubeconfig read by "
    "`kube_http.kubeconfig`, JSON read with the standard library; the executor's requests "
    "plain REST over the controller's httpx2 client; the CRDs installed from their compiled "
    "JSON; h2, hpack and hyperframe kept out, the edge speaking HTTP/1.1): the edge's modules"
    " in a fresh interpreter under the edge's flags 40.0 to 40.6 → 36.2 to 36.3 MiB (without "
    "lightkube alone 38.3 to 38.9). P5 with main's code and this build's, alternated on the "
    "same shared machine (2026-12-07 22:47 to 23:15 UTC, load average 4 to 11), whole edge "
    "started / 100 tasksets / 1,000 objects: main's 62.9 / 65.4 / 70.0 and 65.9 / 68.4 / "
    "72.4 MB; this build's 61.1 / 63.6 / 67.7, 61.2 / 63.6 / 67.7, 58.7 / 61.0 / 65.2 and "
    "61.4 / 63.5 / 68.2 MB (the edge process 39.5 to 41.9 MB at start against main's 43.7 "
    "and 46.2). Idle CPU moved with the machine's load more than with the code: main's "
    "1.03 to 1.10 % at 22:55 and 0.70 to 0.87 % at 23:07, this build's 1.03 to 1.60 % at "
    "22:47 and 22:51, 1.73 to 2.46 % at 23:03 and 0.70 to 1.50 % at 23:11 (the leaf's share"
    " rising with the edge process's); at idle the edge process runs the same loops as "
    "before (no request of the new client's but the controller's heartbeat and the "
    "inventory's; a test holds an idle watch to one request per server timeout)."
    " The edge process alone, idle after one taskset (20 s of /proc CPU time, a fresh "
    "apiserver and hub each, six runs alternated at 23:20 to 23:27): main's code 0.80 to "
    "4.35 % (median 1.00), this build's 0.85 to 2.55 % (median 1.60); whether it costs "
    "more CPU at idle is not settled by these numbers.",
    "What bounds the rest: code and the interpreter's own memory, not state. The leaf's "
    "nats-server program code mapped from its binary (about 15 MiB) plus its own memory (5 "
    "to 7 MiB, growing by about 2 MB with the first 100 tasksets' mirror and outbox "
    "messages) is a floor no Go setting lowered; the edge process's imports cost 36 MiB "
    "before any state (the interpreter, asyncio and ssl, nats-py, httpx2 with httpcore2, "
    "anyio, h11, idna and truststore, msgspec and orjson, the edge's own code). The whole "
    "edge is at 61 MB before the first taskset and grows by 24 to 26 KiB per small taskset "
    "and by 5.2 to 5.3 KiB per managed object (of which the edge process about 3.6 KiB: the "
    "controller's compressed Step cache and its slim copies of the applied objects, and the "
    "allocator's high-water mark of applying them; the leaf about 1.5 KiB: the mirror's and"
    " the outbox's messages), so 100 tasksets (63.6 MB) fit in 64 MB and 1,000 objects (67.7"
    " MB) do not: that needs about 4.6 KiB less per object, or a smaller runtime than one "
    "CPython process beside a stock nats-server.",
    "Idle CPU, this tree's code against that of commit 89b6680 (before lightkube, PyYAML and"
    " HTTP/2 left the edge process, when P5 measured 0.67 to 0.93 %), alternated on the same "
    "machine (2026-12-08, 01:16 to 01:41 UTC, 20 small tasksets, the edge idle): the same "
    "wakeups and the same work. `strace -f -tt` of both processes over 30 s (`python -m "
    "bench.edge_wakeups`, run from each tree's checkout, counts them): the edge process"
    " 546 and 584 epoll_wait calls, 31 `/leafz` requests each, 3 heartbeat Lease writes each "
    "(one TLS request every 10 s), 17 NATS messages received each (the mirror consumer's "
    "heartbeats every 2 s, and the answers to the mirror's stream info, asked every 15 s); "
    "the leaf 1,367 and 1,308 epoll_pwait calls. "
    "cProfile of the edge process over 60 s: 1,156 and 1,180 turns of the event loop, 123 and"
    " 122 readiness checks, 28 and 29 resumptions of the heartbeat's Lease write, 238 and 239"
    " runs of nats-py's flow-control check of the mirror's ordered consumer (every 0.25 s, the"
    " most frequent wakeup). Its Python time (0.74 and 0.45 s) differed by the same factor as"
    " that of nats-py's flow-control loop, code common to both (0.044 and 0.019 s of its own "
    "time): the load of the shared machine (load average 4 to 8, other benchmarks running), "
    "not the code. The idle CPU measured since (1.50 % with 100 tasksets, 3.36 % at start) is"
    " that load on an unchanged set of wakeups; what wakes the edge process each second is "
    "listed in the idle finding above.",
    "The same steps on a quieter machine (2026-12-08 01:58 to 02:02 UTC, load average 3.4 "
    "falling to 1.1), each process's CPU over consecutive windows: with 100 tasksets the "
    "edge process 0.20 % and the leaf 0.20 % (30 s); with 1,000 managed objects, 10 to 70 s"
    " after the last was reported applied, the edge process 0.15, 0.25, 0.20 and 0.25 % and"
    " the leaf 0.20, 0.25, 0.20 and 0.20 % (20 s windows, the last 40 s under cProfile): "
    "the whole edge 0.35 to 0.50 % idle, with 1,000 objects as with 100 tasksets. The "
    "profiled 40 s held 0.08 s of Python time (783 turns of the event loop; a heartbeat "
    "Lease write took 1 ms), against 0.74 s in 60 s at load average 4 to 8: the 2.16 % with"
    " 1,000 objects in the run below (load average 5.4) is the machine's load, not work "
    "that grows with objects.",
    "Memory per managed object, tracemalloc of the edge process (`bench.traced`, run as "
    "started, not lean) between 200 and 1,000 objects: a traced growth of 1.80 KiB per object"
    " against the 3.6 KiB of the untraced process's RSS; the rest is the allocator's "
    "high-water mark of applying them. Of the 1.80 KiB: the controller's informer caches 0.89"
    " (each object's Step, compressed, about 0.6; the slim copy kept by the watch of the "
    "applied objects, about 0.3), the names, namespaces and resourceVersions decoded from "
    "watch events and kept as the caches' keys and versions 0.43, their key tuples 0.14 and "
    "the caches' dicts and indexes 0.31, the connector's decoded fields of the held "
    "ClusterTasks 0.12, the Step index 0.06. Each is a fraction of the 4.6 KiB per object "
    "the 64 MB goal at 1,000 objects needs: taking all of the traced state away would not "
    "reach it, so no cut was made for it here.",
]


@dataclass(frozen=True)
class Step:
    process_rss: float
    leaf_rss: float
    process_cpu: float
    leaf_cpu: float
    process_file: float = 0.0
    """Of the process's RSS, the pages mapped from files (RssFile: the interpreter, extension
    modules and shared libraries); the rest is its own memory (RssAnon)."""
    leaf_file: float = 0.0
    """Of the leaf's RSS, the pages mapped from files (the nats-server program's code)."""

    @property
    def rss(self) -> float:
        return self.process_rss + self.leaf_rss

    @property
    def cpu(self) -> float:
        return self.process_cpu + self.leaf_cpu


async def measure(edge: Child, window: float) -> Step:
    """Both processes of the edge, idle over `window` seconds: CPU share and RSS at the end."""
    leaves = children_of(edge.pid)
    if len(leaves) != 1:
        raise HubFailed(f"the edge process has {len(leaves)} children, expected its leaf only")
    process, leaf = await asyncio.gather(
        sample_idle(edge.pid, window), sample_idle(leaves[0], window)
    )
    return Step(
        process_rss=process.rss_mib,
        leaf_rss=leaf.rss_mib,
        process_cpu=process.cpu_pct,
        leaf_cpu=leaf.cpu_pct,
        process_file=file_rss_mib(edge.pid),
        leaf_file=file_rss_mib(leaves[0]),
    )


def file_rss_mib(pid: int) -> float:
    """RssFile of `pid`: resident pages mapped from files (program code, libraries)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def split_note(steps: dict[str, Step]) -> str:
    """Where the resident memory of the 100-taskset step is: code mapped from files or the
    processes' own memory."""
    step = steps.get("tasksets")
    if step is None or not step.leaf_file:
        return ""
    return (
        f"Of the whole edge's {step.rss:.1f} MB with {TASKSETS} tasksets, "
        f"{step.process_file + step.leaf_file:.1f} MB are code mapped from files (RssFile): "
        f"the leaf's {step.leaf_rss:.1f} MB are {step.leaf_file:.1f} MB of nats-server program "
        f"code and {step.leaf_rss - step.leaf_file:.1f} MB of its own memory; the fleetbus "
        f"process's {step.process_rss:.1f} MB are {step.process_file:.1f} MB of interpreter, "
        f"extension modules and libraries and {step.process_rss - step.process_file:.1f} MB "
        "of its own memory (Python objects, mostly the modules' code and data)."
    )


async def footprint(mode: Mode, kubeconfig: Path | None) -> dict[str, Step]:
    window = 10.0 if mode.quick else 30.0
    within = 240.0 if kubeconfig is None else 600.0
    steps: dict[str, Step] = {}
    async with single_edge(kubeconfig) as edge:
        await asyncio.sleep(SETTLE_S)
        steps["start"] = await measure(edge.edge, window)
        await publish(edge, [small_taskset(f"app-{i:03d}") for i in range(TASKSETS)], within)
        steps["tasksets"] = await measure(edge.edge, window)
        if kubeconfig is not None:
            bulk = [bulk_taskset(f"bulk-{i}", BULK_OBJECTS) for i in range(BULK_TASKSETS)]
            await publish(edge, bulk, within)
            steps["objects"] = await measure(edge.edge, window)
    return steps


async def publish(edge: SingleEdge, sources: list[NormalizedSource], within: float) -> None:
    await edge.publish_all(sources, within=within)
    await asyncio.sleep(SETTLE_S)


def _mb(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


async def run(mode: Mode) -> FigureResult:
    steps: dict[str, Step] = {}
    failure = ""
    executor = "simulator" if mode.quick else "Kubernetes executor and controller"
    try:
        if mode.quick:
            steps = await footprint(mode, None)
        else:
            async with kube_apiserver() as kubeconfig:
                steps = await footprint(mode, kubeconfig)
    except (HubFailed, EnvtestUnavailable) as e:
        failure = str(e).splitlines()[0]
    costs = await import_costs()

    def step_value(name: str, attribute: str) -> float | None:
        step = steps.get(name)
        return getattr(step, attribute) if step is not None else None

    objects_missing = failure or ("quick mode measures the simulator only" if mode.quick else "")
    metrics: list[Metric] = []
    for prefix, name, text, missing in (
        ("", "tasksets", f"{TASKSETS} tasksets", failure),
        ("objects_", "objects", "1,000 managed objects", objects_missing),
        ("start_", "start", "started, nothing applied", failure),
    ):
        metrics += [
            Metric(
                key=f"{prefix}rss_mb",
                label=f"whole edge RSS (fleetbus edge + leaf), {text}",
                unit="MB",
                value=step_value(name, "rss"),
                missing=missing,
            ),
            Metric(
                key=f"{prefix}idle_cpu_pct",
                label=f"whole edge idle CPU (share of one core), {text}",
                unit="%",
                value=step_value(name, "cpu"),
                missing=missing,
            ),
            Metric(
                key=f"{prefix}process_rss_mb",
                label=f"fleetbus edge process RSS ({executor}), {text}",
                unit="MB",
                value=step_value(name, "process_rss"),
                missing=missing,
            ),
            Metric(
                key=f"{prefix}leaf_rss_mb",
                label=f"leaf nats-server RSS, {text}",
                unit="MB",
                value=step_value(name, "leaf_rss"),
                missing=missing,
            ),
        ]
    start, middle, end = steps.get("start"), steps.get("tasksets"), steps.get("objects")
    per_taskset = (middle.rss - start.rss) * 1024 / TASKSETS if start and middle else None
    added_objects = BULK_TASKSETS * BULK_OBJECTS
    per_object = (end.rss - middle.rss) * 1024 / added_objects if middle and end else None
    metrics += [
        Metric(
            key="growth_per_taskset_kib",
            label="whole edge RSS growth per taskset (start → 100 tasksets)",
            unit="KiB",
            value=per_taskset,
            missing=failure,
        ),
        Metric(
            key="growth_per_object_kib",
            label=f"whole edge RSS growth per managed object (200 → 1,000 objects, "
            f"{BULK_OBJECTS} per taskset)",
            unit="KiB",
            value=per_object,
            missing=objects_missing,
        ),
    ]
    window = 10 if mode.quick else 30
    method = (
        "The whole edge: the leaf nats-server and the one `fleetbus edge --kubeconfig` process "
        "(connector and cluster controller in one asyncio loop, as the edge chart deploys them "
        "by default), for one cluster registered with `fleetbus cluster register`, against "
        "kube-envtest (apiserver and etcd), `fleetbus up` and `fleetbus scheduler`. Steps: "
        f"started and idle for {SETTLE_S:.0f} s; {TASKSETS} tasksets (a Namespace and a "
        "ConfigMap each) published with `publish_taskset` and reported applied; then "
        f"{BULK_TASKSETS} tasksets of {BULK_OBJECTS} objects (a Namespace and ConfigMaps), "
        "1,000 managed objects in all. After each step and "
        f"{SETTLE_S:.0f} s more, both processes' CPU time is sampled over {window} s "
        "(utime+stime from /proc, as a share of one core) and their resident memory (VmRSS) "
        "read; the whole edge is their sum. Quick mode runs the simulator edge only."
    )
    notes = [import_notes(costs), *FINDINGS]
    if split := split_note(steps):
        notes.insert(1, split)
    if failure:
        notes.append(f"Not measured: {failure}")
    extra = {
        "tasksets": TASKSETS,
        "objects": TASKSETS * 2 + added_objects,
        "executor": executor,
        "steps": {
            name: {
                "process_rss_mb": _mb(step.process_rss),
                "leaf_rss_mb": _mb(step.leaf_rss),
                "process_cpu_pct": round(step.process_cpu, 3),
                "leaf_cpu_pct": round(step.leaf_cpu, 3),
                "process_file_rss_mb": _mb(step.process_file),
                "leaf_file_rss_mb": _mb(step.leaf_file),
            }
            for name, step in steps.items()
        },
        "imports": [msgspec.to_builtins(cost) for cost in costs],
    }
    return FigureResult(
        key=KEY,
        title=TITLE,
        metrics=metrics,
        targets=TARGETS,
        method=method,
        notes=notes,
        extra=extra,
    )
