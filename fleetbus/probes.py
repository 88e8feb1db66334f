"""The health endpoints of an edge process: `/healthz`, `/readyz` and `/metrics` over plain HTTP.

The edge connector and the cluster controller each serve them on an address inside their pod
(127.0.0.1 by default; the pod's own IP when the kubelet probes them): nothing listens beyond
the pod, and no Service exposes it unless a ServiceMonitor asks for one. The server is a few
lines over `asyncio.start_server` because an edge loads no web framework: it answers GET and
HEAD on three paths, one request per connection, and refuses everything else.

What "live" and "ready" mean belongs to each component (`edge_connector.health`,
`cluster_controller.health`); this module only speaks HTTP for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from fleetbus.errors import ServerFailed

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[tuple[bool, str]]]
"""Answers (healthy, reason): the reason is the body, so `curl /readyz` says what is wrong."""
MetricsText = Callable[[], Awaitable[str]]

DEFAULT_CONNECTOR_HEALTH = ("127.0.0.1", 8081)
DEFAULT_CONTROLLER_HEALTH = ("127.0.0.1", 8082)
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_LINE = 4096


def prometheus_text(samples: Iterable[tuple[str, str, str, float, dict[str, str]]]) -> str:
    """Prometheus text exposition of (name, type, help, value, labels) samples."""
    lines: list[str] = []
    described: set[str] = set()
    for name, kind, help_text, value, labels in samples:
        if name not in described:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            described.add(name)
        label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
        number = int(value) if float(value).is_integer() else value
        lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return "\n".join(lines) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def health_address(text: str) -> tuple[str, int] | None:
    """HOST:PORT for the probes (port 0: any free port), or `off`."""
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or off, got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def add_health_option(parser: argparse.ArgumentParser, default: tuple[str, int]) -> None:
    host, port = default
    parser.add_argument(
        "--health-addr",
        type=health_address,
        default=default,
        metavar="HOST:PORT",
        help=f"serve /healthz, /readyz and /metrics here (default {host}:{port}; in a pod, the "
        "pod's IP so the kubelet can probe it; `off` to serve nothing)",
    )


@functools.cache
def fleetbus_version() -> str:
    """The installed version, read once per process (thousands of simulated edges ask)."""
    try:
        return version("fleetbus")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class ProbeServer:
    host: str
    port: int
    live: Probe
    ready: Probe
    metrics: MetricsText
    _server: asyncio.Server | None = field(default=None, repr=False)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_REQUEST_LINE
            )
        except OSError as e:
            raise ServerFailed(
                f"cannot listen for health probes on {self.host}:{self.port} ({e.strerror or e}); "
                "choose another address with --health-addr"
            ) from e
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("health probes on http://%s:%d (/healthz /readyz /metrics)", self.host, self.port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, body, content_type, head = await self._answer(reader)
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if head else payload)
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that went away or sent garbage gets no answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, str, str, bool]:
        request_line = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # headers: nothing here depends on them
        text = "text/plain; charset=utf-8"
        if len(request_line) != 3:
            return "400 Bad Request", "bad request\n", text, False
        method, target, _ = request_line
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "only GET and HEAD\n", text, False
        path = target.split("?", 1)[0]
        head = method == "HEAD"
        if path == "/metrics":
            return "200 OK", await self.metrics(), "text/plain; version=0.0.4", head
        probe = {"/healthz": self.live, "/livez": self.live, "/readyz": self.ready}.get(path)
        if probe is None:
            return "404 Not Found", "not found: try /healthz, /readyz or /metrics\n", text, head
        ok, reason = await probe()
        status = "200 OK" if ok else "503 Service Unavailable"
        return status, f"{'ok' if ok else 'not ok'}: {reason}\n", text, head
