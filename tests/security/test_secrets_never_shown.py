"""R6: a planted secret never appears in logs, CLI output, API answers or the dashboard.

A real hub (`fleetbus up`) and a real scheduler process run while the CLI publishes a Helm chart
whose Secret takes a password and a token from the chart's values, then sets a per-cluster
override carrying another password, and publishes a plain YAML Secret with its
`last-applied-configuration` annotation. Each secret value is a unique marker. Then everything a
person can look at is collected: every CLI command's stdout and stderr, every GET route of the
API (from its own OpenAPI document) and a slice of the live event stream, the dashboard's files,
and the logs of the hub, the scheduler and nats-server. No marker may appear in any of them —
neither as text, nor base64-encoded, nor inside a base64 blob of zlib-compressed JSON.

Controls keep the test honest: `render --show-secrets` (the explicit opt-in) shows the markers,
and the desired state the scheduler wrote for the cluster (read from NATS with the hub's own
credentials) carries the override's marker — so the secrets really went through the system.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from events.store import connect
from sealing.envelope import open_bytes
from sealing.keyring import Keyring
from taskset.codec import decode_cluster_task
from tests.eventually import eventually
from tests.faults.harness import record_figures
from tests.security.live_hub import FLEETBUS, REPO, LiveHub
from tests.source_servers import GitServer


def marker(kind: str) -> str:
    return f"fbplanted{kind}{secrets.token_hex(8)}"


@dataclass
class Planted:
    values_password: str = field(default_factory=lambda: marker("values"))
    values_token: str = field(default_factory=lambda: marker("token"))
    override_password: str = field(default_factory=lambda: marker("override"))
    yaml_secret: str = field(default_factory=lambda: marker("yaml"))
    git_password: str = field(default_factory=lambda: marker("gitpassword"))
    git_token: str = field(default_factory=lambda: marker("gittoken"))

    @property
    def all(self) -> dict[str, str]:
        return {
            "chart values password": self.values_password,
            "chart values token": self.values_token,
            "override password": self.override_password,
            "YAML Secret": self.yaml_secret,
            "source credentials password": self.git_password,
            "source credentials token": self.git_token,
        }


def encoded_forms(value: str) -> list[bytes]:
    """The value, and the parts of its base64 that are the same whatever precedes it."""
    raw = value.encode()
    forms = [raw]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        core = encoded[(4 * offset + 2) // 3 + 2 : -4]
        forms += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return forms


BLOB = re.compile(rb"[A-Za-z0-9+/_-]{40,}={0,2}")


def hidden_blobs(text: bytes) -> Iterator[bytes]:
    """What base64 runs in `text` decode to, and decompress to if they are zlib data."""
    for match in BLOB.finditer(text):
        chunk = match.group(0)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded = decode(chunk + b"=" * (-len(chunk) % 4))
            except (binascii.Error, ValueError):
                continue
            yield decoded
            with contextlib.suppress(zlib.error):
                yield zlib.decompress(decoded)


def leaks(planted: Planted, text: bytes) -> list[str]:
    found = []
    for what, value in planted.all.items():
        forms = encoded_forms(value)
        if any(form in text for form in forms):
            found.append(what)
        elif any(value.encode() in blob for blob in hidden_blobs(text)):
            found.append(f"{what} (inside an encoded blob)")
    return found


def write_sources(root: Path, planted: Planted) -> tuple[Path, Path, Path]:
    chart = root / "vault"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: vault\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(
        f"password: {planted.values_password}\ntoken: {planted.values_token}\ngreeting: hello\n"
    )
    (chart / "templates" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-credentials\n"
        "stringData:\n  password: {{ .Values.password | quote }}\n"
        "data:\n  token: {{ .Values.token | b64enc | quote }}\n"
    )
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vault-settings\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    override = root / "override-values.yaml"
    override.write_text(f"password: {planted.override_password}\n")
    plain = root / "plain-secret.yaml"
    secret_json = orjson.dumps(
        {"apiVersion": "v1", "kind": "Secret", "stringData": {"key": planted.yaml_secret}}
    ).decode()
    plain.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\n  annotations:\n"
        f"    kubectl.kubernetes.io/last-applied-configuration: '{secret_json}'\n"
        f"stringData:\n  key: {planted.yaml_secret}\n"
    )
    return chart, override, plain


@dataclass
class Scheduler:
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def hub_with_scheduler(tmp_path: Path) -> Iterator[tuple[LiveHub, Scheduler]]:
    hub = LiveHub(tmp_path / "hub", ("--source-host", "127.0.0.1"))
    hub.start()
    log = tmp_path / "scheduler.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*FLEETBUS, "scheduler", "--data-dir", str(hub.data_dir)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield hub, Scheduler(process, log)
    finally:
        stop_process(process)
        hub.stop()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def desired_of(hub: LiveHub, cluster: str, taskset: str) -> bytes | None:
    """The ClusterTask the hub holds for `cluster`, decoded, as canonical JSON (or None)."""
    info = orjson.loads((hub.data_dir / "hub.json").read_bytes())
    nc = await connect(
        info["nats_url"],
        credentials=hub.data_dir / "creds" / "hub.creds",
        max_reconnect_attempts=1,
    )
    try:
        reply = await nc.request(
            "$JS.hub.API.DIRECT.GET.DESIRED",
            orjson.dumps({"last_by_subj": f"fleet.desired.{cluster}.{taskset}"}),
            timeout=5,
        )
    finally:
        await nc.close()
    if (reply.headers or {}).get("Status"):
        return None
    # Sealed for the cluster: the hub's own keyring opens it (as the cluster's key would).
    keyring = Keyring.open(hub.data_dir / "keys")
    subject = f"fleet.desired.{cluster}.{taskset}"
    payload = open_bytes(keyring, reply.data, subject.encode(), subject)
    return orjson.dumps(decode_cluster_task(payload), default=str)


def openapi_get_paths(hub: LiveHub, token: str, values: dict[str, str]) -> list[str]:
    """Every GET route of the API with its path parameters filled in, from its own document."""
    document = hub.http("GET", "/api/v1/openapi.json").json()
    paths = []
    for path, operations in document["paths"].items():
        if "get" not in operations:
            continue
        filled = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "vault"), path)
        query = {
            parameter["name"]: values[parameter["name"]]
            for parameter in operations["get"].get("parameters", [])
            if parameter.get("in") == "query" and parameter["name"] in values
        }
        paths.append(filled + ("?" + urllib.parse.urlencode(query) if query else ""))
    assert paths, "the OpenAPI document lists no GET routes"
    return paths


@pytest.fixture
def private_git(tmp_path: Path) -> Iterator[tuple[GitServer, Planted]]:
    """A Git server over HTTP that wants the planted password (basic auth) or token."""
    planted = Planted()
    server = GitServer(tmp_path / "git", username="deploy", password=planted.git_password, token="")
    server.start()
    try:
        server.create(
            "private",
            {"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-git\n"},
        )
        yield server, planted
    finally:
        server.stop()


async def test_planted_secrets_never_appear_in_logs_cli_output_api_or_dashboard(
    hub_with_scheduler: tuple[LiveHub, Scheduler],
    private_git: tuple[GitServer, Planted],
    tmp_path: Path,
) -> None:
    hub, scheduler = hub_with_scheduler
    git_server, planted = private_git
    chart, override, plain = write_sources(tmp_path, planted)
    data = ("--data-dir", str(hub.data_dir))
    shown: dict[str, bytes] = {}

    def cli(label: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        result = hub.cli(*args)
        shown[f"fleetbus {label} (stdout)"] = result.stdout
        shown[f"fleetbus {label} (stderr)"] = result.stderr
        return result

    control = hub.cli("render", str(chart), "--show-secrets")
    assert leaks(planted, control.stdout) == ["chart values password", "chart values token"], (
        "the opt-in render shows the chart's secrets, and the detector sees them"
    )

    steps = [
        ("render", ("render", str(chart))),
        ("render json", ("render", str(chart), "-o", "json")),
        ("render plain", ("render", str(plain), "--name", "plain")),
        ("cluster register", ("cluster", "register", "east", "--label", "env=prod", *data)),
        ("publish chart", ("publish", str(chart), "--name", "vault", "--cluster", "east", *data)),
        ("publish plain", ("publish", str(plain), "--name", "plain", "--cluster", "east", *data)),
        (
            "override set",
            (
                "override",
                "set",
                "vault",
                "--name",
                "east-pw",
                "--cluster",
                "east",
                "--values",
                str(override),
                *data,
            ),
        ),
    ]
    for label, args in steps:
        result = cli(label, *args)
        assert result.returncode == 0, f"fleetbus {label}: {result.stderr.decode()}"

    # Source credentials: stored through the CLI (stdin), used by a standing source and a
    # one-off publish that the server refuses (its error must not echo the token).
    for label, args, stdin in [
        (
            "source credentials set basic",
            ("source", "credentials", "set", "git-deploy", "--username", "deploy"),
            planted.git_password,
        ),
        ("source credentials set token", ("source", "credentials", "set", "git-token"), None),
    ]:
        flag = "--password-stdin" if stdin else "--token-stdin"
        secret = stdin or planted.git_token
        result = hub.cli(*args, flag, *data, stdin=(secret + "\n").encode())
        shown[f"fleetbus {label} (stdout)"] = result.stdout
        shown[f"fleetbus {label} (stderr)"] = result.stderr
        assert result.returncode == 0, result.stderr.decode()
    stored = hub.data_dir / "source-credentials.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert leaks(planted, stored.read_bytes()) == [
        "source credentials password",
        "source credentials token",
    ], "the hub really holds both credentials"
    url = git_server.http_url("private")
    source = ("--git", url, "--ref", "main", "--path", "app", "--cluster", "east")
    result = cli(
        "source add",
        "source",
        "add",
        "from-git",
        *source,
        "--credentials",
        "git-deploy",
        *data,
    )
    assert result.returncode == 0, result.stderr.decode()
    result = cli("source sync", "source", "sync", "from-git", *data)
    assert result.returncode == 0, result.stderr.decode()
    assert "published: from-git v1" in result.stdout.decode() or "unchanged: from-git v1" in (
        result.stdout.decode()
    )
    refused = cli(
        "publish refused",
        "publish",
        *source,
        "--name",
        "tokened",
        "--credentials",
        "git-token",
        *data,
    )
    assert refused.returncode != 0, "the server wants basic auth, not the token"
    result = cli(
        "source add token",
        "source",
        "add",
        "tokened",
        *source,
        "--credentials",
        "git-token",
        *data,
    )
    assert result.returncode == 0, result.stderr.decode()
    failed = cli("source sync failing", "source", "sync", "tokened", *data)
    assert failed.returncode == 1

    async def override_delivered() -> bool:
        task = await desired_of(hub, "east", "vault")
        return task is not None and planted.override_password.encode() in task

    await eventually(override_delivered, "the override's Secret in east's desired state", 60, 0.3)

    for label, args in [
        ("override ls", ("override", "ls", "vault", *data)),
        ("override preview", ("override", "preview", "vault", "--cluster", "east", *data)),
        ("events", ("events", *data)),
        ("events json", ("events", "-o", "json", *data)),
        ("status", ("status", *data)),
        ("status json", ("status", "-o", "json", *data)),
        ("state yaml", ("state", "--cluster", "east", *data)),
        ("state json", ("state", "--cluster", "east", "-o", "json", *data)),
        ("cluster ls", ("cluster", "ls", *data)),
        ("source ls", ("source", "ls", *data)),
        ("source ls json", ("source", "ls", "-o", "json", *data)),
        ("source credentials ls", ("source", "credentials", "ls", *data)),
        ("events of source", ("events", "--taskset", "tokened", "-o", "json", *data)),
    ]:
        cli(label, *args)

    token = hub.admin_token()
    values = {"name": "vault", "cluster": "east", "taskset": "vault", "stream": "events"}
    for path in ("/api/v1/sources/from-git", "/api/v1/source-credentials"):
        answer = hub.http("GET", path, token=token)
        shown[f"GET {path} ({answer.status})"] = answer.body
    for path in openapi_get_paths(hub, token, values):
        if path.startswith("/api/v1/events/stream"):
            continue
        answer = hub.http("GET", path, token=token)
        shown[f"GET {path} ({answer.status})"] = answer.body
    for stream in ("events", "reports"):
        answer = hub.http("GET", f"/api/v1/events?stream={stream}&limit=500", token=token)
        shown[f"GET /api/v1/events?stream={stream}"] = answer.body
    shown["live event stream"] = read_event_stream(hub, token)
    for asset in ("/", "/app.js", "/style.css"):
        shown[f"dashboard {asset}"] = hub.http("GET", asset).body

    # Stopped first, so everything they would log has been written.
    stop_process(scheduler.process)
    hub.stop()
    shown["hub log"] = hub.log_path.read_bytes()
    shown["scheduler log"] = scheduler.log.read_bytes()
    shown["nats-server log"] = (hub.data_dir / "nats.log").read_bytes()

    found = {where: what for where, text in shown.items() if (what := leaks(planted, text))}
    assert not found, f"planted secrets shown: {found}"
    record_figures(
        "R6 planted secrets",
        markers=len(planted.all),
        outputs_checked=len(shown),
        bytes_checked=sum(len(text) for text in shown.values()),
        leaks=0,
    )


def read_event_stream(hub: LiveHub, token: str, seconds: float = 2.0) -> bytes:
    """What the live stream (SSE) sends in its first seconds, replay included."""
    import urllib.request

    request = urllib.request.Request(
        f"{hub.http_url}/api/v1/events/stream?from_seq=1",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    received = b""
    deadline = time.monotonic() + seconds
    try:
        with urllib.request.urlopen(request, timeout=seconds) as response:
            while time.monotonic() < deadline:
                chunk = response.read1(65536)
                if not chunk:
                    break
                received += chunk
    except TimeoutError:
        pass
    return received


def test_the_leak_detector_finds_a_marker_as_text_base64_or_compressed_inside_base64() -> None:
    planted = Planted()
    value = planted.override_password.encode()
    assert leaks(planted, b"x " + value + b" y") == ["override password"]
    for prefix in (b"", b"a", b"ab"):
        wrapped = base64.b64encode(prefix + value + b"tail")
        assert leaks(planted, b'{"data": "' + wrapped + b'"}') == ["override password"]
    body = base64.b64encode(zlib.compress(b'{"stringData": {"k": "' + value + b'"}}'))
    assert leaks(planted, b'{"body": "' + body + b'"}') == [
        "override password (inside an encoded blob)"
    ]
    assert leaks(planted, b"nothing planted here") == []
