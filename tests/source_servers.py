"""Real source servers on loopback for the sources tests.

- `HelmRepository`: index.yaml and chart packages made with helm_python (`package`,
  `repo_index_generate`), served by a threaded HTTP server, optionally behind basic auth;
- `OciRegistry`: the CNCF distribution registry built by `make registry`
  (`.cache/registry/bin/registry`), a child process on a free port with a temporary store,
  optionally behind htpasswd basic auth (bcrypt hashes); charts are pushed with helm_python;
- `GitServer`: repositories served by `git daemon` (git://) and by `git http-backend` behind an
  HTTP server that checks basic or bearer credentials (http://);
- `SshGitServer`: the same repositories over SSH (ssh://), an asyncssh server with its own host
  key that takes public-key logins and runs `git-upload-pack`.

Every server counts the requests it answered, so a test can say a host was never contacted.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import os
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import helm_python
import pytest

from fleetbus.natsserver import free_port

REPO = Path(__file__).resolve().parent.parent
REGISTRY_BIN = REPO / ".cache" / "registry" / "bin" / "registry"

CONFIGMAP_TEMPLATE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  chartVersion: {{ .Chart.Version | quote }}
  greeting: {{ .Values.greeting | quote }}
"""


def make_chart(
    root: Path,
    name: str,
    version: str,
    *,
    template: str = CONFIGMAP_TEMPLATE,
    extra_chart_yaml: str = "",
) -> Path:
    """A chart directory `root/<name>-<version>/<name>` with one template."""
    directory = root / f"{name}-{version}" / name
    (directory / "templates").mkdir(parents=True, exist_ok=True)
    (directory / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\nversion: {version}\n{extra_chart_yaml}"
    )
    (directory / "values.yaml").write_text("greeting: hello\n")
    (directory / "templates" / "settings.yaml").write_text(template)
    return directory


def package_chart(directory: Path, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return Path(helm_python.package(str(directory), destination=str(destination)))


@dataclass
class Counter:
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self) -> None:
        with self.lock:
            self.requests += 1


def _authorized(header: str | None, username: str, password: str, token: str) -> bool:
    if not (username or token):
        return True
    if header is None:
        return False
    if token and header == f"Bearer {token}":
        return True
    expected = base64.b64encode(f"{username}:{password}".encode()).decode()
    return bool(username) and header == f"Basic {expected}"


class _RepoHandler(http.server.SimpleHTTPRequestHandler):
    server_config: HelmRepository

    def do_GET(self) -> None:
        config = self.server_config
        config.counter.add()
        if not _authorized(self.headers.get("Authorization"), config.username, config.password, ""):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="charts"')
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class HelmRepository:
    root: Path
    username: str = ""
    password: str = ""
    counter: Counter = field(default_factory=Counter)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_RepoHandler,), {"server_config": self})
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(self.root))
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.reindex()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def reindex(self) -> None:
        helm_python.repo_index_generate(self.root)

    def add(self, chart_directory: Path) -> Path:
        archive = package_chart(chart_directory, self.root)
        self.reindex()
        return archive


@dataclass
class OciRegistry:
    workdir: Path
    username: str = ""
    password: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if not REGISTRY_BIN.is_file():
            pytest.fail(f"{REGISTRY_BIN} is missing: run `make registry`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "registry.yml"
        auth = ""
        if self.username:
            htpasswd = self.workdir / "htpasswd"
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            htpasswd.write_text(f"{self.username}:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: charts\n    path: {htpasswd}\n"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n"
            f"http:\n  addr: {self.host}\n{auth}"
        )
        with (self.workdir / "registry.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(REGISTRY_BIN), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError as e:
                if e.code == 401 and self.username:
                    return
                raise
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "the registry did not start: "
                        + (self.workdir / "registry.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def push(self, archive: Path, repository: str = "charts") -> None:
        if not self.username:
            helm_python.push(archive, f"oci://{self.host}/{repository}", plain_http=True)
            return
        with helm_python.RegistryClient(
            plain_http=True, credentials_file=self.workdir / "push-login.json"
        ) as client:
            client.login(self.host, self.username, self.password, plain_http=True)
            client.push(archive, f"oci://{self.host}/{repository}", plain_http=True)


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [
            "git",
            "-c",
            "user.name=fleetbus tests",
            "-c",
            "user.email=tests@fleetbus.invalid",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


class _GitHttpHandler(http.server.BaseHTTPRequestHandler):
    server_config: GitServer

    def _serve(self) -> None:
        config = self.server_config
        config.counter.add()
        if not _authorized(
            self.headers.get("Authorization"), config.username, config.password, config.token
        ):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "GIT_PROJECT_ROOT": str(config.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol") or "",
            "REMOTE_USER": config.username or "anonymous",
            "REMOTE_ADDR": "127.0.0.1",
        }
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class GitServer:
    root: Path
    username: str = ""
    password: str = ""
    token: str = ""
    counter: Counter = field(default_factory=Counter)
    daemon_port: int = field(default_factory=free_port)
    daemon: subprocess.Popen[bytes] | None = None
    http: http.server.ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_GitHttpHandler,), {"server_config": self})
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.daemon = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                f"--port={self.daemon_port}",
                f"--base-path={self.root}",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        import socket

        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.daemon_port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("git daemon did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            self.daemon.wait(10)

    def http_url(self, name: str) -> str:
        assert self.http is not None
        return f"http://127.0.0.1:{self.http.server_port}/{name}.git"

    def git_url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.daemon_port}/{name}.git"

    def create(self, name: str, files: dict[str, str]) -> str:
        """A bare repository `name.git` holding `files` on `main`; the commit SHA."""
        bare = self.root / f"{name}.git"
        git("init", "-q", "--bare", str(bare), cwd=self.root)
        work = self.root / f"{name}-work"
        git("clone", "-q", str(bare), str(work), cwd=self.root)
        return self.commit(name, files)

    def commit(self, name: str, files: dict[str, str], message: str = "change") -> str:
        work = self.root / f"{name}-work"
        for relative, text in files.items():
            path = work / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", message, cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def helm_repository(tmp_path: Path) -> Iterator[HelmRepository]:
    repository = HelmRepository(tmp_path / "helm-repo")
    repository.start()
    try:
        yield repository
    finally:
        repository.stop()


@pytest.fixture
def oci_registry(tmp_path: Path) -> Iterator[OciRegistry]:
    registry = OciRegistry(tmp_path / "oci")
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    server = GitServer(tmp_path / "git")
    server.start()
    try:
        yield server
    finally:
        server.stop()


with warnings.catch_warnings():
    # asyncssh still names DSA keys, which cryptography deprecates, when it is imported.
    warnings.simplefilter("ignore")
    import asyncssh


def ssh_key_pair() -> tuple[str, str]:
    """A new ed25519 key: (the private key in OpenSSH form, the public key line)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    return (
        key.export_private_key("openssh").decode(),
        key.export_public_key("openssh").decode().strip(),
    )


@dataclass
class SshGitServer:
    """Git over SSH: an asyncssh server on loopback that takes public-key logins from
    `authorized` only and runs `git-upload-pack` for repositories under `git.root` (a
    `GitServer`'s, so the same repositories are reachable over git://, http:// and ssh://)."""

    git: GitServer
    authorized: list[str]
    """Public key lines allowed to log in."""
    port: int = field(default_factory=free_port)
    host_key: Any = None
    logins: Counter = field(default_factory=Counter)
    """Sessions that ran a command (past authentication)."""
    connections: Counter = field(default_factory=Counter)
    loop: asyncio.AbstractEventLoop | None = None
    server: Any = None
    thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"ssh://git@127.0.0.1:{self.port}/{name}.git"

    def known_hosts(self) -> str:
        """This server's known_hosts line, as `ssh-keyscan -p PORT 127.0.0.1` prints it."""
        public = self.host_key.export_public_key("openssh").decode().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n"

    def start(self) -> None:
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self.loop)
        self.server = future.result(10)

    async def _listen(self) -> Any:
        server = self

        class Accounting(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                server.connections.add()

        return await asyncssh.create_server(
            Accounting,
            "127.0.0.1",
            self.port,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys("\n".join(self.authorized)),
            process_factory=self._serve,
            encoding=None,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
        )

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        self.logins.add()
        command = shlex.split(process.command or "")
        if len(command) != 2 or command[0] != "git-upload-pack":
            process.stderr.write(b"only git-upload-pack is served here\n")
            process.exit(1)
            return
        repository = (self.git.root / command[1].lstrip("/")).resolve()
        if self.git.root.resolve() not in repository.parents or not repository.is_dir():
            process.stderr.write(f"no repository {command[1]}\n".encode())
            process.exit(1)
            return
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.git.root)}
        protocol = (process.env or {}).get("GIT_PROTOCOL")
        if protocol:
            env["GIT_PROTOCOL"] = str(protocol)
        upload = await asyncio.create_subprocess_exec(
            "git-upload-pack",
            "--strict",
            str(repository),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        await process.redirect(stdin=upload.stdin, stdout=upload.stdout, stderr=upload.stderr)
        process.exit(await upload.wait())
        await process.wait_closed()

    def stop(self) -> None:
        if self.loop is None:
            return

        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()
            running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        self.loop.close()
