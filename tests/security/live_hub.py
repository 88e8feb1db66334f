"""A real `fleetbus up` process for the bad-input and secrecy suites.

The hub runs as users run it (a child process on free loopback ports, its own data dir), with
everything it prints captured to a file, so a suite can assert on its logs. `last_sequences`
reads the streams' state from nats-server's own monitoring endpoint: "nothing was written" is
checked against the server, not against anything the hub reports about itself.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fleetbus.natsserver import free_port
from tests.processes import nats_servers_under

REPO = Path(__file__).resolve().parent.parent.parent
FLEETBUS = [sys.executable, "-m", "fleetbus.cli"]
STREAMS = ("EVENTS", "DESIRED", "REPORTS")


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class LiveHub:
    data_dir: Path
    extra_args: tuple[str, ...] = ()
    http_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    leaf_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-up.log"

    @property
    def tls(self) -> bool:
        return "--tls" in self.extra_args

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """For a hub started with `--tls`: trust its CA (it exists once the hub has started)."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.data_dir / "pki" / "ca.crt"))

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *FLEETBUS,
                    "up",
                    "--data-dir",
                    str(self.data_dir),
                    "--http",
                    f"127.0.0.1:{self.http_port}",
                    "--nats-port",
                    str(self.nats_port),
                    "--leaf-port",
                    str(self.leaf_port),
                    *self.extra_args,
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None:
                raise AssertionError(f"fleetbus up exited: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"fleetbus up not healthy in {timeout}s: {self.log_text()}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            context = self.ssl_context()
            url = f"{self.http_url}/healthz"
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                return bool(response.status == 200)
        except (OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        for pid in nats_servers_under(self.data_dir):
            os.kill(pid, signal.SIGKILL)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def monitor_port(self) -> int:
        config = (self.data_dir / "nats.conf").read_text()
        match = re.search(r'^http:\s*"?127\.0\.0\.1:(\d+)', config, re.MULTILINE)
        assert match, "the hub's nats.conf names no monitoring port"
        return int(match.group(1))

    def last_sequences(self) -> dict[str, int]:
        """Each hub stream's last sequence, as nats-server itself reports it."""
        url = f"http://127.0.0.1:{self.monitor_port()}/jsz?streams=true&accounts=true"
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = orjson.loads(response.read())
        found = dict.fromkeys(STREAMS, 0)
        for account in answer.get("account_details", []):
            for stream in account.get("stream_detail", []):
                if stream.get("name") in found:
                    found[stream["name"]] = int(stream["state"]["last_seq"])
        return found

    def http(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> HttpAnswer:
        request = urllib.request.Request(
            f"{self.http_url}{path}", data=body, method=method, headers=dict(headers or {})
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            context = self.ssl_context()
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return HttpAnswer(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as e:
            return HttpAnswer(e.code, e.read(), dict(e.headers))

    def upload(self, token: str, spec: dict[str, Any], filename: str, content: bytes) -> HttpAnswer:
        """`POST /api/v1/tasksets` as a multipart form: the `spec` JSON and the `source` file."""
        boundary = "fleetbus-test-" + os.urandom(8).hex()
        parts = [
            (b'Content-Disposition: form-data; name="spec"\r\n\r\n', orjson.dumps(spec)),
            (
                f'Content-Disposition: form-data; name="source"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n".encode(),
                content,
            ),
        ]
        body = b"".join(
            b"--" + boundary.encode() + b"\r\n" + head + data + b"\r\n" for head, data in parts
        )
        body += b"--" + boundary.encode() + b"--\r\n"
        return self.http(
            "POST",
            "/api/v1/tasksets",
            token=token,
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

    def declare_body(self, method: str, path: str, length: int) -> tuple[int, bytes]:
        """Send only the headers of a request announcing a `length`-byte JSON body; return the
        status and body the hub answers with before (or instead of) reading it."""
        token = self.admin_token()
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=30) as conn:
            conn.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def cli(
        self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `fleetbus ARGS` against this hub (its data dir), as a user would."""
        return subprocess.run(
            [*FLEETBUS, *args],
            cwd=REPO,
            input=stdin,
            capture_output=True,
            timeout=120,
            check=False,
            env={**os.environ, **(env or {})},
        )
