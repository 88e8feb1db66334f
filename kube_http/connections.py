# ruff: noqa: ASYNC109 - the `timeout` parameters are httpcore2's network-backend interface
"""Connections to the apiserver that are closed however the request that opened them ends.

httpx2 opens connections through httpcore2, which closes a connection whose TLS handshake
fails with an error, but not one whose handshake is interrupted by a cancellation: the TCP
connection is left open, owned by nothing, until the garbage collector finds it ("unclosed
socket"). At the edge this happens on every stop of a component that has requests in flight,
and most often when the cluster controller fails and is started again: its task group cancels
a dozen list and watch requests at once, and on a loaded node several of them are still in
their TLS handshake. Each such restart would leak one connection per interrupted handshake.

`close_interrupted_handshakes(client)` gives the client's connection pools a network backend
whose TCP streams close themselves when their TLS handshake ends in anything but success,
cancellation included. httpx2 builds its pools itself and has no option for their network
backend (httpcore2's pools take one), so it is set on each pool the client holds; a client
whose pools cannot take it is refused with `UnsupportedClient` rather than left leaking.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
from httpcore2 import AnyIOBackend, AsyncNetworkBackend, AsyncNetworkStream

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)
"""httpcore2's socket option (`httpcore2._backends.base.SOCKET_OPTION`)."""


class UnsupportedClient(TypeError):
    """The HTTP client's pools are not httpcore2 pools with a network backend."""


class HandshakeClosingStream(AsyncNetworkStream):
    """A plain TCP stream that closes itself when a TLS handshake on it does not complete."""

    def __init__(self, stream: AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncNetworkStream:
        try:
            return await self._stream.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            # Cancelled (or interrupted otherwise) in the handshake: nothing else will ever
            # close this connection. The close starts at once (the transport is told to close
            # before its first await), so a second cancellation cannot keep it open.
            with contextlib.suppress(OSError):
                await self._stream.aclose()
            raise

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class HandshakeClosingBackend(AsyncNetworkBackend):
    """httpcore2's asyncio backend, with streams that close an interrupted TLS handshake."""

    def __init__(self, backend: AsyncNetworkBackend | None = None) -> None:
        self._backend = backend or AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return HandshakeClosingStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(path, timeout, socket_options)
        return HandshakeClosingStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def _pools(client: object) -> list[object]:
    transports = [getattr(client, "_transport", None)]
    transports += list((getattr(client, "_mounts", None) or {}).values())
    return [getattr(t, "_pool", None) for t in transports if t is not None]


def close_interrupted_handshakes(client: object) -> None:
    """Make every connection pool of an httpx2 `AsyncClient` close the connections whose TLS
    handshake is interrupted (see the module's docstring). Call it before the first request."""
    pools = _pools(client)
    if not pools:
        raise UnsupportedClient(f"{type(client).__name__} has no httpx2 transport")
    for pool in pools:
        if not isinstance(pool, httpcore2.AsyncConnectionPool):
            raise UnsupportedClient(
                f"{type(pool).__name__} is not an httpcore2 connection pool: its interrupted "
                "TLS handshakes could not be closed"
            )
        backend = pool._network_backend
        if not isinstance(backend, HandshakeClosingBackend):
            pool._network_backend = HandshakeClosingBackend()


def keep_idle_connections(client: object, seconds: float) -> None:
    """Keep the idle connections of `client`'s pools open `seconds` (httpx2's default is 5 s)
    instead of opening a new TLS connection for a request every few seconds, such as the
    cluster controller's heartbeat every 10 s: a handshake costs both sides far more CPU
    than the request. A connection the apiserver closed meanwhile is noticed and replaced
    before reuse. Call it before the first request (connections take it when made)."""
    pools = _pools(client)
    if not pools:
        raise UnsupportedClient(f"{type(client).__name__} has no httpx2 transport")
    for pool in pools:
        if not isinstance(pool, httpcore2.AsyncConnectionPool):
            raise UnsupportedClient(f"{type(pool).__name__} is not an httpcore2 connection pool")
        pool._keepalive_expiry = seconds


def closes_interrupted_handshakes(client: object) -> bool:
    """Whether `close_interrupted_handshakes` has been applied to every pool of `client`."""
    pools = _pools(client)
    return bool(pools) and all(
        isinstance(getattr(pool, "_network_backend", None), HandshakeClosingBackend)
        for pool in pools
    )
