"""`fleetbus controller` as a process: installs its CRDs, reconciles, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cluster_controller.health import ControllerHealth
from cluster_controller.kube import Kube
from cluster_controller.runtime import Controller, ControllerOptions
from fleetbus.natsserver import free_port
from fleetbus.probes import prometheus_text
from kube_contract.resources import STEP, TASK
from taskset.model import Step, Taskset
from tests.eventually import eventually
from tests.exported_metrics import CONTROLLER_METRICS
from tests.integration.controller_harness import (
    ControllerEnv,
    cluster_task,
    unique,
)
from tests.kube_envtest import KubeAPIServer

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]


def fleetbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetbus.cli", *args]


@pytest.fixture
def health_port() -> int:
    return free_port()


@pytest.fixture
def controller_process(
    kube_apiserver: KubeAPIServer, kube_namespace: str, health_port: int
) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        fleetbus(
            "controller",
            "--kubeconfig",
            str(kube_apiserver.kubeconfig),
            "--namespace",
            kube_namespace,
            f"--health-addr=127.0.0.1:{health_port}",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
async def kube(kube_apiserver: KubeAPIServer) -> AsyncIterator[Kube]:
    client = Kube.connect(kube_apiserver.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


async def read_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    assert process.stderr is not None
    lines: list[str] = []
    while True:
        line = await asyncio.to_thread(process.stderr.readline)
        if not line:
            raise AssertionError(f"controller exited before {marker!r}:\n{''.join(lines)}")
        lines.append(line)
        if marker in line:
            return lines


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except OSError as e:
        return 0, str(e)


async def test_the_controller_command_installs_its_crds_reconciles_and_stops_on_sigterm(
    controller_process: subprocess.Popen[str], kube: Kube, kube_namespace: str, health_port: int
) -> None:
    startup = await asyncio.wait_for(read_until(controller_process, "reconciling"), 120)
    assert any("CRDs established" in line for line in startup)
    probes = f"http://127.0.0.1:{health_port}"
    assert any(f"health probes on {probes}" in line for line in startup)

    # Reconciling means the watches are synced: the controller is ready, and says why.
    assert await asyncio.to_thread(get, f"{probes}/readyz") == (200, "ok: watches synced\n")
    assert (await asyncio.to_thread(get, f"{probes}/healthz"))[0] == 200
    metrics = (await asyncio.to_thread(get, f"{probes}/metrics"))[1]
    for resource in ("tasks", "tasklets", "steps", "fleetnamespaces"):
        assert f'fleetbus_controller_watch_synced{{resource="{resource}"}} 1' in metrics
    assert "fleetbus_controller_ready 1" in metrics

    env = ControllerEnv(kube=kube, controller=None, namespace=kube_namespace)
    name = unique("cli")
    taskset = Taskset(
        name=name,
        namespace=kube_namespace,
        install=[
            Step(
                object={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name},
                    "data": {"a": "1"},
                }
            )
        ],
    )
    await env.publish(cluster_task(taskset))
    status = await env.task_phase(name, "Ready")
    assert status["progress"] == "1/1"
    assert (await kube.list(STEP, namespace=kube_namespace)).items
    assert await kube.get(TASK, name, kube_namespace) is not None

    controller_process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(controller_process.wait, 30)

    assert code == 0
    assert (await asyncio.to_thread(get, f"{probes}/readyz"))[0] == 0, "nothing listens after"


def test_an_unusable_kubeconfig_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.kubeconfig"

    result = subprocess.run(
        fleetbus("controller", "--kubeconfig", str(missing)),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fleetbus: error: cannot read kubeconfig {missing}: No such file or directory"
    ]


async def test_the_controller_turns_ready_only_once_its_watches_are_synced(
    kube: Kube, kube_namespace: str
) -> None:
    controller = Controller(kube, ControllerOptions(namespace=kube_namespace, workers=1))
    health = ControllerHealth(controller, "9.9.9")
    ready, reason = health.readiness()
    assert not ready
    assert reason == "watches not synced yet: fleetnamespaces, steps, tasklets, tasks"
    assert "fleetbus_controller_ready 0" in prometheus_text(health.samples())
    assert {name for name, *_ in health.samples()} == CONTROLLER_METRICS, "as the alerts expect"

    running = asyncio.create_task(controller.run(health.ready))
    try:
        await eventually(lambda: health.readiness()[0], "the controller ready", 60)
        assert health.readiness() == (True, "watches synced")
        assert all(health.informers_synced().values())
        text = prometheus_text(health.samples())
        assert 'fleetbus_controller_info{version="9.9.9"} 1' in text
        assert 'fleetbus_controller_watch_synced{resource="tasks"} 1' in text
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    health.stopped = "stopping"
    assert health.readiness() == (False, "stopping")
    assert health.live() == (False, "stopping")


def test_a_replica_waiting_for_the_lease_is_ready_as_a_standby(kube: Kube) -> None:
    health = ControllerHealth(Controller(kube), "1.0")
    health.standby = True
    assert health.readiness() == (True, "standby: another replica holds the leader Lease")
