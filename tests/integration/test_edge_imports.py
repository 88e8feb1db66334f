"""What a real edge process loads, start to steady state: nothing it does not need.

`fleetbus edge --kubeconfig` (connector and cluster controller in one process) is started as a
child process with `python -X importtime`, which reports every module the process imports for
its whole life, lazy imports included. It joins a real hub through its real leaf nats-server,
applies a ClusterTask sealed with its cluster's data key to a fresh real kube-apiserver, and is
stopped. Every large library it must not load (each one costs megabytes of resident memory at
every cluster) must be absent from what it imported, and the modules that prove the path was
walked (the controller, the envelope opener) present.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.catalog import TaskApplied
from tests.eventually import eventually
from tests.integration.edge_harness import EdgeHub, cluster_task, edge_hub
from tests.integration.test_edge_one_process import config_map_taskset
from tests.kube_envtest import KubeAPIServer, create_namespace, running_kube_envtest

pytestmark = pytest.mark.kube

CLUSTER = "lean"

MUST_NOT_LOAD = {
    "cryptography": "certificates are read with the standard library, envelopes opened "
    "through the interpreter's libcrypto (sealing.gcm)",
    "bcrypt": "pulled in by cryptography's SSH serialization",
    "simulator": "the simulated executor, for --sim only",
    "helm_python": "the Helm engine, a hub concern",
    "aiosqlite": "the hub's read models",
    "litestar": "the hub's API",
    "lightkube": "the kubeconfig is read and the apiserver spoken to by kube_http and plain "
    "REST; the library's models alone cost megabytes",
    "yaml": "the controller installs its CRDs from their compiled JSON and the kubeconfig here "
    "is JSON, as the edge chart writes it",
    "h2": "HTTP/2: the edge speaks HTTP/1.1 to the apiserver",
    "nkeys": "the edge authenticates with its certificate and a credentials file read by "
    "the leaf nats-server, not by the Python client",
}

MUST_LOAD = (
    "cluster_controller.runtime",
    "edge_connector.kube_executor",
    "kube_http.kubeconfig",
    "sealing.gcm",
)


@pytest.fixture
def own_apiserver(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with running_kube_envtest(tmp_path / "apiserver") as api:
        yield api


def imported_modules(importtime_log: str) -> set[str]:
    """Every module named in `-X importtime` lines (`import time: self | cumulative | name`)."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":
                names.add(name)
    return names


def loaded(modules: set[str], package: str) -> list[str]:
    """`package`'s modules the process imported. A package that was imported is listed
    itself; a submodule without it is an import that failed (the package kept out,
    `fleetbus.edge_process.keep_out_unused_modules`), which loaded nothing."""
    if package not in modules:
        return []
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


async def applied(hub: EdgeHub, taskset: str) -> bool:
    return any(
        isinstance(event, TaskApplied) and event.taskset == taskset and event.cluster == CLUSTER
        for _, event, _ in await hub.reports()
    )


async def test_the_edge_process_never_imports_what_it_does_not_need(
    tmp_path: Path, own_apiserver: KubeAPIServer
) -> None:
    namespace = "apps"
    create_namespace(own_apiserver, namespace)
    create_namespace(own_apiserver, "fleetbus-system")
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register(CLUSTER)
        log_path = tmp_path / "edge.stderr"
        with log_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "fleetbus.edge",
                "--bundle",
                str(bundle.root),
                "--kubeconfig",
                str(own_apiserver.kubeconfig),
                "--state-dir",
                str(tmp_path / "edge"),
                "--health-addr",
                "off",
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            await hub.write_desired(
                cluster_task(CLUSTER, config_map_taskset("sealed", namespace)), sealed=True
            )
            await eventually(lambda: applied(hub, "sealed"), "the sealed taskset applied", 90)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), 30)
        log = log_path.read_text()
        assert code == 0, log[-3000:]

    modules = imported_modules(log)
    for name in MUST_LOAD:
        assert name in modules, f"the edge never imported {name}: the path was not walked"
    unwanted = {
        package: loaded(modules, package) for package in MUST_NOT_LOAD if loaded(modules, package)
    }
    assert not unwanted, "the edge process imported " + "; ".join(
        f"{package} ({MUST_NOT_LOAD[package]}): {', '.join(names[:5])}"
        for package, names in unwanted.items()
    )
