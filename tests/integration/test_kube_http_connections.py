"""A request to the apiserver cancelled in its TLS handshake closes its connection at once.

A real loopback TCP server stands in for an apiserver that is slow to answer the handshake (it
accepts and then says nothing, as a loaded apiserver does for a moment). The client request
is cancelled while its TLS handshake waits, as a stopping or failing edge component cancels
its list and watch requests. The server must see the connection closed, and no socket may be
left for the garbage collector.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2

from cluster_controller.kube import Kube
from edge_connector.kube_executor import IDLE_CONNECTION_S, KubernetesExecutor
from events.tasks import cancel_and_wait
from fleetbus.edge import ControllerSettings
from fleetbus.edge_controller import executor_with_controller
from kube_http.connections import (
    close_interrupted_handshakes,
    closes_interrupted_handshakes,
    keep_idle_connections,
)
from tests.eventually import eventually
from tests.leaks import unclosed_sockets


class SilentServer:
    """Accepts TCP connections and never answers; records when each one is closed."""

    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            while await reader.read(65536):
                pass  # the ClientHello, unanswered
            self.closed += 1
        finally:
            writer.close()


@asynccontextmanager
async def silent_server() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        for writer in server.writers:
            writer.close()
        await listening.wait_closed()
        await asyncio.sleep(0)  # the handlers see their connections end


async def _cancel_in_handshake(client: httpx2.AsyncClient, server: SilentServer) -> None:
    request = asyncio.create_task(client.get(f"https://127.0.0.1:{server.port}/api"))
    await eventually(lambda: server.accepted == 1, "the connection accepted", 10)
    await asyncio.sleep(0.05)  # the ClientHello sent; the handshake waits for an answer
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    assert request.cancelled()


async def test_a_request_cancelled_in_its_tls_handshake_closes_its_connection() -> None:
    client = httpx2.AsyncClient(verify=ssl.create_default_context())
    close_interrupted_handshakes(client)
    try:
        async with silent_server() as server:
            await _cancel_in_handshake(client, server)
            await eventually(lambda: server.closed == 1, "the server seeing the close", 10)
            assert unclosed_sockets() == []
    finally:
        await client.aclose()


async def test_a_second_request_after_a_cancelled_handshake_connects_anew() -> None:
    """The pool forgets the interrupted connection: the next request opens its own."""
    client = httpx2.AsyncClient(verify=ssl.create_default_context())
    close_interrupted_handshakes(client)
    close_interrupted_handshakes(client)  # idempotent
    try:
        async with silent_server() as server:
            await _cancel_in_handshake(client, server)
            request = asyncio.create_task(client.get(f"https://127.0.0.1:{server.port}/api"))
            await eventually(lambda: server.accepted == 2, "a new connection", 10)
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            await eventually(lambda: server.closed == 2, "both connections closed", 10)
    finally:
        await client.aclose()
    assert unclosed_sockets() == []


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: not-a-secret}
contexts:
- name: c
  context: {cluster: c, user: u, namespace: edge}
current-context: c
"""


async def test_every_apiserver_client_of_the_edge_closes_interrupted_handshakes(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % 6443)
    executor = KubernetesExecutor.from_kubeconfig(kubeconfig, cluster="c")
    kube = Kube.connect(kubeconfig)
    scoped = kube.with_token("another-token")
    try:
        assert closes_interrupted_handshakes(executor.http_client)
        assert closes_interrupted_handshakes(kube._http)
        assert closes_interrupted_handshakes(scoped._http)
        assert closes_interrupted_handshakes(Kube.sharing(executor.http_client)._http)
    finally:
        await scoped.close()
        await kube.close()
        await executor.close()
    assert not closes_interrupted_handshakes(httpx2.AsyncClient())


async def test_an_edge_controller_stopped_in_its_tls_handshakes_leaves_no_connection_open(
    tmp_path: Path,
) -> None:
    """The controller of `fleetbus edge` stopped (as the edge stops it) while its first
    requests still wait for the apiserver's handshake: each of their connections is closed."""
    async with silent_server() as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG % server.port)
        executor, controller = executor_with_controller(
            kubeconfig, "c", ControllerSettings(workers=1)
        )
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        try:
            await eventually(lambda: server.accepted >= 1, "the controller connecting", 10)
            await asyncio.sleep(0.05)
            assert not controller.health()[0]
            stop.set()
            await cancel_and_wait([running])
            await eventually(lambda: server.closed == server.accepted, "its connections closed", 10)
        finally:
            await cancel_and_wait([running])
            await executor.close()
    assert unclosed_sockets() == []


class CountingHttpServer:
    """Answers every HTTP/1.1 request with a small JSON body; counts its connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\n\r\n{}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _connections_for_two_requests(idle_s: float) -> int:
    server = CountingHttpServer()
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    client = httpx2.AsyncClient()
    keep_idle_connections(client, idle_s)
    try:
        for _ in range(2):
            response = await client.get(f"http://127.0.0.1:{server.port}/version")
            assert response.status_code == 200
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()
        listening.close()
        for writer in server.writers:
            writer.close()
        await listening.wait_closed()
    return server.accepted


async def test_idle_apiserver_connections_are_kept_for_the_next_request(tmp_path: Path) -> None:
    """The edge's requests every few seconds (the heartbeat every 10 s) reuse one connection
    instead of a TLS handshake each: its pools keep idle connections for a minute."""
    # The setting takes: kept for less than the pause, each request connects anew.
    assert await _connections_for_two_requests(0.05) == 2
    assert await _connections_for_two_requests(IDLE_CONNECTION_S) == 1
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % 6443)
    executor = KubernetesExecutor.from_kubeconfig(kubeconfig, cluster="c")
    try:
        pool = executor.http_client._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry == IDLE_CONNECTION_S
        assert IDLE_CONNECTION_S > 10.0, "longer than the heartbeat's interval"
    finally:
        await executor.close()
