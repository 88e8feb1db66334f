"""The cluster controller's health reaches the hub: real hub, edge, controller and apiserver.

`fleetbus up` runs the hub; the edge (leaf nats-server and connector with the Kubernetes
executor) and `fleetbus controller` (a child process) run against the kube-apiserver from
infra/envtest. The controller renews its heartbeat Lease; the connector reads it and sends the
verdict in its inventory digests; `fleetbus cluster ls -o json|wide` and `cluster show` read it
from the hub's API. A controller killed outright shows as not reporting, one stopped with
SIGTERM as stopped, each with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from fleetbus.bundle import read_edge_bundle
from fleetbus.edge import EdgeRuntime, EdgeState
from fleetbus.probes import fleetbus_version
from tests.e2e.test_hub_process import Hub, hub
from tests.eventually import eventually_value
from tests.kube_envtest import KubeAPIServer

__all__ = ["hub"]

pytestmark = pytest.mark.kube

CLUSTER = "edge-health"
REPO = Path(__file__).resolve().parents[2]


def controller_of(hub: Hub) -> dict[str, Any] | None:
    done = hub.fleetbus("cluster", "ls", "-o", "json")
    if done.returncode != 0:
        return None
    for cluster in json.loads(done.stdout):
        if cluster["name"] == CLUSTER:
            found: dict[str, Any] | None = cluster.get("controller")
            return found
    return None


async def poll_controller(hub: Hub, accept: Any, what: str) -> dict[str, Any]:
    found: dict[str, Any] = await eventually_value(
        lambda: asyncio.to_thread(controller_of, hub),
        what,
        lambda c: c is not None and accept(c),
        within=90,
        interval=0.5,
    )
    return found


class ControllerProcess:
    """`fleetbus controller` as a child process, renewing its heartbeat every second."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetbus.cli",
                "controller",
                "--kubeconfig",
                str(kubeconfig),
                "--namespace",
                namespace,
                "--lease-namespace",
                namespace,
                "--heartbeat-interval",
                "1",
                "--health-addr",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )

    @property
    def replica(self) -> str:
        return f"{socket.gethostname()}-{self.process.pid}"

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(30)

    def kill_if_running(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def controllers(kube_apiserver: KubeAPIServer, kube_namespace: str) -> Iterator[Any]:
    started: list[ControllerProcess] = []

    def start() -> ControllerProcess:
        process = ControllerProcess(kube_apiserver.kubeconfig, kube_namespace)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill_if_running()


async def test_the_hub_shows_the_controllers_health_and_why_it_is_not_ready_once_it_stops(
    hub: Hub,
    controllers: Any,
    kube_apiserver: KubeAPIServer,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    await asyncio.to_thread(hub.start)
    bundle_dir = tmp_path / "bundle"
    registered = await asyncio.to_thread(
        hub.fleetbus, "cluster", "register", CLUSTER, "--out", str(bundle_dir)
    )
    assert registered.returncode == 0, registered.stderr
    executor = KubernetesExecutor(
        ApiClient.from_kubeconfig(kube_apiserver.kubeconfig),
        cluster=CLUSTER,
        namespace=kube_namespace,
        apply_timeout=60,
    )
    edge = await EdgeRuntime.leaf(
        read_edge_bundle(bundle_dir),
        EdgeState(tmp_path / "edge"),
        executor,
        inventory_interval=1.0,
    )
    try:
        # Before any controller runs, the hub hears that none reports.
        missing = await poll_controller(hub, lambda c: True, "the controller's health at the hub")
        assert not missing["ready"]
        assert "no cluster controller has reported its health" in missing["reason"]

        first = controllers()
        healthy = await poll_controller(
            hub, lambda c: c["ready"], "the controller ready at the hub"
        )
        assert healthy["reason"] == f"controller {first.replica}: watches synced"
        assert healthy["version"] == fleetbus_version()
        assert healthy["leader"] == first.replica
        assert healthy["watches_synced"] is True
        (replica,) = healthy["replicas"]
        assert replica["role"] == "single"
        assert replica["watches"] == {
            "tasks": True,
            "tasklets": True,
            "steps": True,
            "fleetnamespaces": True,
        }

        assert "fleetbus_edge_controller_ready 1" in await edge.metrics()

        wide = await asyncio.to_thread(hub.fleetbus, "cluster", "ls", "-o", "wide")
        assert wide.returncode == 0, wide.stderr
        header, *rows = wide.stdout.splitlines()
        assert "CONTROLLER" in header.split()
        (row,) = [r for r in rows if r.startswith(CLUSTER)]
        assert "ready" in row.split()
        assert fleetbus_version() in row.split()
        shown = await asyncio.to_thread(hub.fleetbus, "cluster", "show", CLUSTER)
        assert shown.returncode == 0, shown.stderr
        assert f"controller:  {fleetbus_version()}, ready: controller {first.replica}" in (
            shown.stdout
        )
        assert f"replica {first.replica}: single, ready" in shown.stdout

        # Killed outright: its heartbeat runs out, and the hub says since when.
        await asyncio.to_thread(first.stop, signal.SIGKILL)
        gone = await poll_controller(
            hub, lambda c: not c["ready"], "the killed controller not ready at the hub"
        )
        assert "the cluster controller has not reported since" in gone["reason"]
        assert (
            f"replica {first.replica} stopped or cannot reach the Kubernetes API"
            in (gone["reason"])
        )
        assert gone["replicas"][0]["stale"] is True
        assert "fleetbus_edge_controller_ready 0" in await edge.metrics()
        shown = await asyncio.to_thread(hub.fleetbus, "cluster", "show", CLUSTER)
        assert "NOT READY: the cluster controller has not reported since" in shown.stdout

        # A new replica takes over; stopped cleanly, it says so at once.
        second = controllers()
        await poll_controller(
            hub,
            lambda c: c["ready"] and c["leader"] == second.replica,
            "the second controller ready at the hub",
        )
        assert await asyncio.to_thread(second.stop, signal.SIGTERM) == 0
        stopped = await poll_controller(
            hub, lambda c: not c["ready"], "the stopped controller not ready at the hub"
        )
        # Said at once; read a little later, the hub says since when it stopped.
        assert f"controller {second.replica}: stopped: asked to stop" in stopped["reason"]
        assert stopped["replicas"][0]["stopped"] is True
    finally:
        await edge.stop()
        assert await asyncio.to_thread(hub.interrupt) == 0
