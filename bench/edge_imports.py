"""What each module of the edge process costs when imported, measured in fresh interpreters.

The modules are imported one after another, in the order the edge process (`fleetbus edge
--kubeconfig`, connector and controller) brings them in, so each row is what that module and
whatever it pulls in first add on top of the rows before it. Two fresh interpreters: one reads
the resident memory (VmRSS) after each import, the other the Python heap that tracemalloc sees
(so its own bookkeeping does not inflate the RSS figures). Both run as `fleetbus edge` runs
(`fleetbus.edge_process`): under its interpreter flags and allocator settings, with its
modules imported without `importlib.metadata`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import msgspec

from fleetbus.edge_process import INTERPRETER_FLAGS, lean_environment

EDGE_MODULES: tuple[tuple[str, str], ...] = (
    ("msgspec, orjson", "msgspec, orjson"),
    ("nats (nats-py client)", "nats.aio.client, nats.js"),
    ("the event log adapter (events.store)", "events.store"),
    ("the connector (edge_connector.connector, .jetstream)", "edge_connector.jetstream"),
    ("the edge entry (fleetbus.edge: bundle, leaf, probes)", "fleetbus.edge"),
    ("httpx2 and the kubeconfig reader (kube_http)", "httpx2, kube_http.client"),
    ("the Kubernetes executor (edge_connector.kube_executor)", "edge_connector.kube_executor"),
    ("the cluster controller (cluster_controller.runtime, crds)", "cluster_controller.runtime"),
    ("the controller component (fleetbus.edge_controller)", "fleetbus.edge_controller"),
)

_PROBE = """
import json, sys, tracemalloc
trace = sys.argv[1] == "trace"
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0
if trace:
    tracemalloc.start()
rows = [["interpreter", rss(), 0.0]]
from fleetbus.edge_process import distribution_versions_without_metadata
for label, names in json.loads(sys.argv[2]):
    with distribution_versions_without_metadata():
        for name in names.split(","):
            __import__(name.strip())
    heap = tracemalloc.get_traced_memory()[0] / 1048576.0 if trace else 0.0
    rows.append([label, rss(), heap])
print(json.dumps(rows))
"""


class ImportCost(msgspec.Struct, frozen=True, kw_only=True):
    what: str
    rss_mib: float
    """Resident memory of the process after this import (cumulative)."""
    rss_added_mib: float
    heap_added_mib: float
    """Python heap (tracemalloc) this import added."""


async def _probe(mode: str) -> list[tuple[str, float, float]]:
    rows = msgspec.json.encode([list(row) for row in EDGE_MODULES]).decode()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *INTERPRETER_FLAGS,
        "-c",
        _PROBE,
        mode,
        rows,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=lean_environment(dict(os.environ)),
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"import probe failed: {err.decode()[-300:]}")
    return [(str(a), float(b), float(c)) for a, b, c in msgspec.json.decode(out)]


async def import_costs() -> list[ImportCost]:
    """One row per step: the interpreter itself, then each module group of the edge process."""
    plain = await _probe("rss")
    traced = await _probe("trace")
    costs: list[ImportCost] = []
    previous_rss = 0.0
    previous_heap = 0.0
    for (what, rss, _), (_, _, heap) in zip(plain, traced, strict=True):
        costs.append(
            ImportCost(
                what=what,
                rss_mib=rss,
                rss_added_mib=rss - previous_rss,
                heap_added_mib=heap - previous_heap,
            )
        )
        previous_rss, previous_heap = rss, heap
    return costs


def import_notes(costs: list[ImportCost]) -> str:
    """One sentence listing what each step adds."""
    parts = [
        f"{cost.what} {cost.rss_added_mib:.1f} MiB RSS"
        + (f" ({cost.heap_added_mib:.1f} MiB Python heap)" if cost.heap_added_mib else "")
        for cost in costs
    ]
    total = costs[-1].rss_mib if costs else 0.0
    return (
        "Import cost of the edge process, in a fresh interpreter, each step on top of the "
        f"ones before (RSS after all: {total:.1f} MiB): " + "; ".join(parts) + "."
    )
