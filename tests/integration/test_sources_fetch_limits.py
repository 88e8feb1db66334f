"""A chart download (from a Helm repository, an OCI registry, or as a dependency) is held to
the size limit while it arrives, and to the time limit: the Helm worker stops at the limit (the
server sees the connection drop long before it has sent the chart), and a fetch that times out
or is cancelled leaves no process downloading behind it. Credentials reach the worker on a
pipe, never on its command line or in its environment.

The repository is real (index.yaml made by helm_python); only its archive is served the way the
test needs it: a gigabyte as fast as loopback goes, or a trickle that never ends in time.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from charts.store import ChartStore
from events.store import EventStore
from sources.credentials import Credential
from sources.errors import SourceTimedOut, SourceTooLarge
from sources.fetch import FetchPolicy, fetch_source
from sources.limits import SourceLimits
from sources.processes import FetchDeadline
from sources.publish import PublishSettings, fetch_and_publish
from sources.references import HostAllowList, SourceRef
from tests.eventually import eventually
from tests.source_servers import (
    GitServer,
    OciRegistry,
    git_server,
    make_chart,
    oci_registry,
    package_chart,
)

__all__ = ["git_server", "oci_registry"]

GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024
ALLOWED = HostAllowList.parse(["127.0.0.1"])


@dataclass
class ArchiveStream:
    """What the archive route sends: `total` bytes announced, `chunk` bytes per write, `pause_s`
    between writes."""

    total: int
    chunk: int = 256 * 1024
    pause_s: float = 0.0
    password: str = ""
    """Basic auth (user `ci`) on every route, when set."""
    sent: int = 0
    started: threading.Event = field(default_factory=threading.Event)
    dropped: threading.Event = field(default_factory=threading.Event)
    """The client closed the connection before everything was sent."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.SimpleHTTPRequestHandler):
    stream: ArchiveStream

    def do_GET(self) -> None:
        wanted = base64.b64encode(f"ci:{self.stream.password}".encode()).decode()
        if self.stream.password and self.headers.get("Authorization") != f"Basic {wanted}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
            self.end_headers()
            return
        if not self.path.endswith(".tgz"):
            super().do_GET()
            return
        stream = self.stream
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(stream.total))
        self.end_headers()
        stream.started.set()
        block = b"\0" * stream.chunk
        left = stream.total
        try:
            while left > 0:
                piece = block[: min(left, stream.chunk)]
                self.wfile.write(piece)
                with stream.lock:
                    stream.sent += len(piece)
                left -= len(piece)
                if stream.pause_s:
                    time.sleep(stream.pause_s)
        except OSError:
            stream.dropped.set()

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class StreamingRepository:
    url: str
    stream: ArchiveStream


def serve(root: Path, stream: ArchiveStream) -> Iterator[StreamingRepository]:
    chart = make_chart(root / "src", "huge", "1.0.0")
    package_chart(chart, root / "repo")
    import helm_python

    helm_python.repo_index_generate(root / "repo")
    handler = type("Handler", (_Handler,), {"stream": stream})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root / "repo"))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield StreamingRepository(f"http://127.0.0.1:{server.server_port}", stream)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fast_gigabyte(tmp_path: Path) -> Iterator[StreamingRepository]:
    yield from serve(tmp_path, ArchiveStream(total=GIB))


@pytest.fixture
def trickle(tmp_path: Path) -> Iterator[StreamingRepository]:
    yield from serve(tmp_path, ArchiveStream(total=GIB, chunk=4096, pause_s=0.05))


def helm_workers() -> list[int]:
    """This test process's Helm workers still alive (their process groups are their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if b"sources.helm_worker" in cmdline and parent == os.getpid():
            found.append(int(entry))
    return found


def test_a_chart_over_the_size_limit_is_stopped_while_it_downloads(
    fast_gigabyte: StreamingRepository, tmp_path: Path
) -> None:
    ref = SourceRef(kind="helm-repo", url=fast_gigabyte.url, chart="huge")
    policy = FetchPolicy(allowed=ALLOWED, limits=SourceLimits(max_total_bytes=MIB))
    (tmp_path / "work").mkdir()
    started = time.monotonic()
    with pytest.raises(
        SourceTooLarge,
        match=r"chart huge latest .* stopped while downloading: .* limit of 1,048,576 bytes",
    ):
        fetch_source(ref, tmp_path / "work", policy)
    took = time.monotonic() - started
    assert fast_gigabyte.stream.dropped.wait(10), "the download's connection was closed"
    sent = fast_gigabyte.stream.sent
    # Loopback buffers and one watchdog interval let some more through; a gigabyte never.
    assert sent < 64 * MIB, f"{sent:,} bytes were sent for a 1 MiB limit"
    assert not helm_workers()
    print(f"size limit 1 MiB: server sent {sent:,} bytes before the drop; {took:.2f}s")


def test_a_fetch_that_times_out_kills_its_download(
    trickle: StreamingRepository, tmp_path: Path
) -> None:
    ref = SourceRef(kind="helm-repo", url=trickle.url, chart="huge")
    policy = FetchPolicy(allowed=ALLOWED, limits=SourceLimits(timeout_s=3))
    (tmp_path / "work").mkdir()
    started = time.monotonic()
    with pytest.raises(SourceTimedOut, match=r"pulling chart huge latest .* longer than 3s"):
        fetch_source(ref, tmp_path / "work", policy)
    # Far below the hours the trickle would take, however slow a loaded machine is.
    assert time.monotonic() - started < 60
    assert trickle.stream.started.is_set(), "the download had begun"
    assert trickle.stream.dropped.wait(30), "the download's connection was closed"
    assert not helm_workers(), "no Helm worker outlives the fetch"
    sent = trickle.stream.sent
    time.sleep(0.5)
    assert trickle.stream.sent == sent, "nothing downloads behind the timed-out fetch"


async def test_a_cancelled_publish_from_a_source_stops_its_download(
    trickle: StreamingRepository, event_store: EventStore
) -> None:
    ref = SourceRef(kind="helm-repo", url=trickle.url, chart="huge")
    policy = FetchPolicy(allowed=ALLOWED, limits=SourceLimits(timeout_s=600))
    publishing = asyncio.create_task(
        fetch_and_publish(
            event_store,
            ChartStore.beside(event_store),
            ref,
            PublishSettings(name="huge"),
            policy,
            actor="user:ops",
            now=datetime.now(UTC),
        )
    )

    async def downloading() -> bool:
        return trickle.stream.sent > 0

    await eventually(downloading, "the chart download has begun", 30, 0.05)
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publishing
    dropped = await asyncio.to_thread(trickle.stream.dropped.wait, 30)
    assert dropped, "the download's connection was closed"

    async def no_workers() -> bool:
        return not helm_workers()

    await eventually(no_workers, "no Helm worker left", 30, 0.05)


def test_a_registry_chart_over_the_size_limit_is_stopped_while_it_downloads(
    oci_registry: OciRegistry, tmp_path: Path
) -> None:
    chart = make_chart(tmp_path / "src", "bulky", "1.0.0")
    for n in range(4):  # incompressible: the archive stays 16 MiB
        (chart / f"blob-{n}.bin").write_bytes(os.urandom(4 * MIB))
    oci_registry.push(package_chart(chart, tmp_path / "pkg"))
    ref = SourceRef(kind="oci", url=f"oci://{oci_registry.host}/charts/bulky", plain_http=True)
    policy = FetchPolicy(allowed=ALLOWED, limits=SourceLimits(max_total_bytes=256 * 1024))
    (tmp_path / "work").mkdir()
    with pytest.raises(SourceTooLarge, match=r"stopped while downloading: .* 262,144 bytes"):
        fetch_source(ref, tmp_path / "work", policy)
    assert not list((tmp_path / "work" / "download").glob("*.tgz")), "no archive was written"


def test_a_dependency_over_the_size_limit_is_stopped_while_it_downloads(
    fast_gigabyte: StreamingRepository, git_server: GitServer, tmp_path: Path
) -> None:
    git_server.create(
        "charts",
        {
            "app/Chart.yaml": (
                "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: huge\n"
                f"  version: 1.0.0\n  repository: {fast_gigabyte.url}\n"
            ),
            "app/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
        },
    )
    ref = SourceRef(kind="git", url=git_server.git_url("charts"), ref="main", path="app")
    policy = FetchPolicy(allowed=ALLOWED, limits=SourceLimits(max_total_bytes=MIB))
    (tmp_path / "work").mkdir()
    with pytest.raises(
        SourceTooLarge,
        match=r"the dependencies huge of the chart was stopped while downloading: .* 1,048,576",
    ):
        fetch_source(ref, tmp_path / "work", policy)
    assert fast_gigabyte.stream.dropped.wait(10), "the dependency's download was cut"
    assert fast_gigabyte.stream.sent < 64 * MIB


@pytest.fixture
def private_trickle(tmp_path: Path) -> Iterator[StreamingRepository]:
    yield from serve(
        tmp_path,
        ArchiveStream(total=GIB, chunk=4096, pause_s=0.05, password="trickle-pass-0d3a9f"),
    )


def test_the_worker_gets_credentials_on_a_pipe_never_on_its_command_line_or_environment(
    private_trickle: StreamingRepository, tmp_path: Path
) -> None:
    ref = SourceRef(kind="helm-repo", url=private_trickle.url, chart="huge")
    policy = FetchPolicy(allowed=ALLOWED, limits=SourceLimits(timeout_s=30))
    credential = Credential(kind="basic", username="ci", password="trickle-pass-0d3a9f")
    (tmp_path / "work").mkdir()
    deadline = FetchDeadline(30)
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            fetch_source(ref, tmp_path / "work", policy, credential=credential, deadline=deadline)
        except SourceTimedOut as e:
            errors.append(e)

    fetching = threading.Thread(target=fetch)
    fetching.start()
    try:
        assert private_trickle.stream.started.wait(20), "the authenticated download began"
        workers = helm_workers()
        assert len(workers) == 1
        seen = {
            part: Path(f"/proc/{workers[0]}/{part}").read_bytes() for part in ("cmdline", "environ")
        }
        assert b"sources.helm_worker" in seen["cmdline"]
        assert b"HOME=" in seen["environ"], "the worker's environment was read"
        for part, text in seen.items():
            assert b"trickle-pass-0d3a9f" not in text, f"the password is in the worker's {part}"
    finally:
        deadline.cancel()
        fetching.join(10)
    assert [str(e) for e in errors] == [f"pulling {ref.describe()} was cancelled"]
    assert not helm_workers()
