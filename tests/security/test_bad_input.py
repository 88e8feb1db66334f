"""R5: malformed input is refused with one clear error, and nothing reaches the log.

A table of bad inputs goes through every door a user has: the CLI (sources, arguments, values
files), the HTTP API (uploads, bodies, names, selectors, overrides) and the bus (garbage where
the hub's services listen). Every case must end in a clear error — exit code 2 and one line
saying what is wrong, or a 4xx with a JSON error — and the hub's streams must hold exactly what
they held before (their last sequences, read from nats-server's own monitoring, are unchanged).
"""

from __future__ import annotations

import http.server
import io
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
import yaml

from access.nats_accounts import NatsAuthority
from fleetbus.cli import main
from fleetbus.natsserver import free_port
from tests.faults.harness import record_figures
from tests.security.bad_inputs import BAD_SOURCES, CONFIGMAP, BadSource
from tests.security.kustomize_bypasses import BYPASSES
from tests.security.live_hub import HttpAnswer, LiveHub
from tests.security.test_bad_input_bus import BAD_APPENDS, GARBAGE_INVENTORIES


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = LiveHub(tmp_path_factory.mktemp("bad-input") / "hub")
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@dataclass
class CliOutcome:
    code: int
    stdout: bytes
    stderr: str


def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: bytes | None = None
) -> CliOutcome:
    """`fleetbus ARGV` in this process: the same code path as the command, minus the exec."""
    saved_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
    finally:
        sys.stdin = saved_stdin
    captured = capsys.readouterr()
    return CliOutcome(code, captured.out.encode(), captured.err)


def assert_one_clear_error(outcome: CliOutcome, expect: str) -> None:
    assert outcome.code == 2, f"exit code {outcome.code}: {outcome.stderr}"
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert lines, "no error message at all"
    error = lines[-1]
    assert error.startswith("fleetbus"), outcome.stderr
    assert "error:" in error, outcome.stderr
    assert expect in error, f"{expect!r} not in {error!r}"
    assert outcome.stdout == b"", "output printed before the error"


@pytest.mark.parametrize("case", BAD_SOURCES, ids=lambda case: case.id)
def test_a_bad_source_given_to_the_cli_is_one_clear_error_and_writes_nothing(
    case: BadSource, live_hub: LiveHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = live_hub.last_sequences()
    path = case.write(tmp_path)
    argv = ["render", str(path), "-o", "json"]
    if case.values is not None:
        values = tmp_path / "values.yaml"
        values.write_bytes(case.values)
        argv += ["--values", str(values)]
    assert_one_clear_error(run_cli(argv, capsys), case.expect)
    assert live_hub.last_sequences() == before


@dataclass(frozen=True)
class CliCase:
    id: str
    argv: tuple[str, ...]
    """`{ok}` is a valid YAML source, `{values}` a values file, `{data}` the hub's data dir."""
    expect: str
    stdin: bytes | None = None
    values: bytes = b"replicas: 2\n"
    own_process: bool = False
    """Run as a real process: what libraries log goes to its stderr as a user would see it."""


CLI_CASES = [
    CliCase("source-does-not-exist", ("render", "{missing}"), "does not exist"),
    CliCase(
        "taskset-name-invalid", ("render", "{ok}", "--name", "Bad Name"), "invalid taskset name"
    ),
    CliCase(
        "taskset-name-too-long", ("render", "{ok}", "--name", "x" * 64), "invalid taskset name"
    ),
    CliCase("namespace-invalid", ("render", "{ok}", "-n", "x..y"), "invalid namespace name"),
    CliCase("stdin-without-a-name", ("render", "-"), "needs a name", stdin=CONFIGMAP),
    CliCase(
        "stdin-as-kustomize",
        ("render", "-", "--format", "kustomize", "--name", "x"),
        "must be given as a directory",
        stdin=CONFIGMAP,
    ),
    CliCase(
        "values-for-plain-yaml",
        ("render", "{ok}", "--values", "{values}"),
        "values apply to Helm charts only",
    ),
    CliCase(
        "values-file-not-a-mapping",
        ("render", "{chart}", "--values", "{values}"),
        "expected a mapping",
        values=b"- 1\n- 2\n",
    ),
    CliCase(
        "values-file-invalid-yaml",
        ("render", "{chart}", "--values", "{values}"),
        "invalid YAML",
        values=b"a: [\n",
    ),
    CliCase("values-file-missing", ("render", "{chart}", "--values", "{missing}"), "values"),
    CliCase("output-format-unknown", ("render", "{ok}", "-o", "xml"), "invalid choice"),
    CliCase("events-since-not-a-time", ("events", "--since", "yesterday"), "expected a time"),
    CliCase(
        "events-from-seq-not-a-number",
        ("events", "--from-seq", "abc"),
        "argument --from-seq: must be a whole number >= 1, got 'abc'",
    ),
    CliCase(
        "events-from-seq-negative",
        ("events", "--from-seq", "-5"),
        "argument --from-seq: must be a whole number >= 1, got -5",
    ),
    CliCase(
        "events-from-seq-zero",
        ("events", "--from-seq", "0"),
        "argument --from-seq: must be a whole number >= 1, got 0",
    ),
    CliCase(
        "up-nats-port-out-of-range",
        ("up", "--nats-port", "70000"),
        "argument --nats-port: must be a whole number from 1 to 65535, got 70000",
    ),
    CliCase(
        "up-leaf-port-negative",
        ("up", "--leaf-port", "-1"),
        "argument --leaf-port: must be a whole number from 1 to 65535, got -1",
    ),
    CliCase(
        "up-sim-clusters-negative",
        ("up", "--sim-clusters", "-3"),
        "argument --sim-clusters: must be a whole number >= 0, got -3",
    ),
    CliCase(
        "controller-workers-zero",
        ("controller", "--workers", "0"),
        "argument --workers: must be a whole number from 1 to 256, got 0",
    ),
    CliCase(
        "controller-resync-infinite",
        ("controller", "--resync", "inf"),
        "argument --resync: must be a number of seconds above 0, got inf",
    ),
    CliCase(
        "scheduler-lease-ttl-negative",
        ("scheduler", "--lease-ttl", "-3"),
        "argument --lease-ttl: must be a whole number from 1 to 3600, got -3",
    ),
    CliCase(
        "scheduler-snapshot-every-negative",
        ("scheduler", "--snapshot-every", "-1"),
        "argument --snapshot-every: must be a whole number >= 0, got -1",
    ),
    CliCase(
        "up-snapshot-every-not-a-number",
        ("up", "--snapshot-every", "often"),
        "argument --snapshot-every: must be a whole number >= 0, got 'often'",
    ),
    CliCase(
        "up-events-retain-without-a-unit",
        ("up", "--events-retain", "age=90"),
        "argument --events-retain: age=90: write a duration like 90d",
    ),
    CliCase(
        "up-events-retain-unknown-limit",
        ("up", "--events-retain", "days=90"),
        "argument --events-retain: unknown limit 'days'",
    ),
    CliCase(
        "up-events-retain-too-few-events",
        ("up", "--events-retain", "events=10"),
        "argument --events-retain: events=10: keep at least 100 events",
    ),
    CliCase(
        "up-events-retain-without-snapshots",
        ("up", "--data-dir", "{empty}", "--events-retain", "age=30d", "--snapshot-every", "0"),
        "--events-retain: events leave the live log only once a snapshot covers them",
    ),
    CliCase(
        "up-events-archive-every-zero",
        ("up", "--events-archive-every", "0"),
        "argument --events-archive-every: must be a number of seconds above 0",
    ),
    CliCase(
        "scheduler-snapshot-keep-zero",
        ("scheduler", "--snapshot-keep", "0"),
        "argument --snapshot-keep: must be a whole number >= 1, got 0",
    ),
    CliCase("snapshot-without-an-action", ("snapshot",), "ACTION"),
    CliCase(
        "snapshot-ls-without-a-hub", ("snapshot", "ls", "--data-dir", "{empty}"), "fleetbus up"
    ),
    CliCase("events-without-a-hub", ("events", "--data-dir", "{empty}"), "fleetbus up"),
    CliCase(
        "projector-rebuild-when-the-hubs-nats-is-down",
        ("projector", "rebuild", "--data-dir", "{deadhub}"),
        "cannot connect to NATS",
        own_process=True,
    ),
    CliCase(
        "cluster-ls-when-the-hubs-api-is-down",
        ("cluster", "ls", "--data-dir", "{deadhub}"),
        "cannot reach the hub",
        own_process=True,
    ),
    CliCase(
        "status-when-the-hubs-api-is-down",
        ("status", "--data-dir", "{deadhub}"),
        "cannot reach the hub",
        own_process=True,
    ),
    CliCase("up-http-not-host-port", ("up", "--http", "nope"), "expected HOST:PORT"),
    CliCase("up-nats-url-not-a-url", ("up", "--nats-url", "foo"), "expected nats://"),
    CliCase("up-replicas-out-of-range", ("up", "--replicas", "9"), "replicas must be 1 to 5"),
    CliCase("up-on-a-data-dir-in-use", ("up", "--data-dir", "{data}"), "another hub is running"),
    CliCase(
        "token-expiry-not-a-duration",
        ("token", "create", "--role", "viewer", "--expires-in", "5y"),
        "argument --expires-in: must be a duration like 90d, 12h, 30m or 45s",
    ),
    CliCase(
        "token-rotation-grace-negative",
        ("token", "rotate", "admin", "--grace", "-5"),
        "argument --grace: must be a duration like 90d",
    ),
    CliCase(
        "up-tls-cert-without-key",
        ("up", "--tls-cert", "{ok}"),
        "--tls-cert and --tls-key go together: give both or neither",
    ),
    CliCase(
        "up-tls-cert-not-a-certificate",
        ("up", "--tls-cert", "{ok}", "--tls-key", "{ok}"),
        "not a PEM certificate and its matching key",
    ),
    CliCase(
        "up-tls-cert-missing",
        ("up", "--tls-cert", "{missing}", "--tls-key", "{missing}"),
        "missing.yaml does not exist or is not a file",
    ),
    CliCase(
        "cli-tls-fingerprint-malformed",
        ("cluster", "ls", "--server", "https://127.0.0.1:1", "--tls-fingerprint", "abc"),
        "--tls-fingerprint: a TLS fingerprint is the certificate's SHA-256 as 64 hex digits",
    ),
    CliCase("unknown-command", ("frobnicate",), "invalid choice"),
    CliCase(
        "override-sensitive-path-not-in-values",
        (
            "override",
            "set",
            "web",
            "--name",
            "o",
            "--selector",
            "env=x",
            "--values",
            "{values}",
            "--sensitive",
            "db.password",
            "--data-dir",
            "{data}",
        ),
        "sensitive path 'db.password' names no entry of its values",
    ),
    CliCase(
        "override-sensitive-with-a-patch",
        (
            "override",
            "set",
            "web",
            "--name",
            "o",
            "--selector",
            "env=x",
            "--patch",
            "{values}",
            "--sensitive",
            "a",
            "--data-dir",
            "{data}",
        ),
        "--sensitive marks Helm values",
    ),
    CliCase(
        "keys-rotate-kek-only-with-a-cluster",
        ("keys", "rotate", "--kek-only", "--cluster", "east", "--data-dir", "{data}"),
        "cannot go with --kek-only",
    ),
    CliCase(
        "keys-rotate-an-unknown-cluster",
        ("keys", "rotate", "--cluster", "nowhere", "--data-dir", "{data}"),
        "nowhere not registered",
    ),
    CliCase(
        "keys-shred-invalid-cluster-name",
        ("keys", "shred", "--cluster", "No_Such", "--data-dir", "{data}"),
        "invalid cluster name",
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.id)
def test_a_bad_cli_argument_is_one_clear_error_and_writes_nothing(
    case: CliCase, live_hub: LiveHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = live_hub.last_sequences()
    ok = tmp_path / "ok.yaml"
    ok.write_bytes(CONFIGMAP)
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_bytes(b"apiVersion: v2\nname: chart\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_bytes(CONFIGMAP)
    values = tmp_path / "values.yaml"
    values.write_bytes(case.values)
    dead = tmp_path / "dead-hub"
    dead.mkdir()
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    (dead / "hub.json").write_bytes(
        orjson.dumps(
            {
                "nats_url": f"nats://{closed}",
                "nats_urls": [f"nats://{closed}"],
                "http_url": f"http://{closed}",
                "data_dir": str(dead),
            }
        )
    )
    # A hub's own NATS credentials, of an operator no server here trusts.
    NatsAuthority.open(dead).service_credentials(dead / "creds")
    places = {
        "{deadhub}": str(dead),
        "{ok}": str(ok),
        "{chart}": str(chart),
        "{values}": str(values),
        "{missing}": str(tmp_path / "missing.yaml"),
        "{empty}": str(tmp_path / "no-hub-here"),
        "{data}": str(live_hub.data_dir),
    }
    argv = [places.get(arg, arg) for arg in case.argv]
    if case.own_process:
        done = live_hub.cli(*argv, stdin=case.stdin)
        outcome = CliOutcome(done.returncode, done.stdout, done.stderr.decode(errors="replace"))
    else:
        outcome = run_cli(argv, capsys, case.stdin)
    assert_one_clear_error(outcome, case.expect)
    assert live_hub.last_sequences() == before


def test_the_bad_input_table_has_at_least_fifty_cases() -> None:
    tables = {
        "cli_sources": len(BAD_SOURCES),
        "cli_arguments": len(CLI_CASES),
        "bus_inventory_garbage": len(GARBAGE_INVENTORIES),
        "bus_refused_appends": len(BAD_APPENDS),
        "api_uploads": len(BAD_SOURCES) - len(API_VALID_UPLOADS),
        "api_requests": len(API_CASES) + 2,
        "api_publish_specs": len(PUBLISH_SPEC_CASES),
    }
    record_figures("R5 bad input table", total=sum(tables.values()), **tables)
    assert sum(tables.values()) >= 50


def source_upload(path: Path) -> tuple[str, bytes]:
    """What a user uploads for a source: a file as it is, a directory as a .tar.gz."""
    if path.is_file():
        return path.name, path.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(path, arcname=path.name)
    return f"{path.name}.tar.gz", buffer.getvalue()


@pytest.fixture(scope="module")
def api_hub(live_hub: LiveHub) -> LiveHub:
    """The hub with a registered cluster `east` and a published YAML taskset `web`."""
    token = live_hub.admin_token()
    registered = live_hub.http(
        "POST",
        "/api/v1/clusters",
        token=token,
        body=b'{"name": "east", "labels": {"env": "prod"}}',
        headers={"Content-Type": "application/json"},
    )
    assert registered.status == 201, registered.body[:300]
    published = live_hub.upload(token, {"name": "web"}, "web.yaml", CONFIGMAP + b"data: {k: v}\n")
    assert published.status == 201, published.body
    return live_hub


def assert_clear_http_error(answer: HttpAnswer, status: int, expect: str) -> None:
    assert answer.status == status, f"{answer.status}: {answer.body[:300]!r}"
    error = answer.json()["error"]
    assert expect in error, f"{expect!r} not in {error!r}"
    assert "Traceback" not in error
    assert "internal error" not in error


API_SOURCE_EXPECT = {
    # The API unpacks uploads itself and refuses unsafe archives before Helm sees them.
    "archive-path-traversal": "'..' components",
    "archive-gzip-of-garbage": "not a readable tar",
    "archive-not-gzip": "not a readable tar",
    "archive-gzip-bomb": "holds no Kubernetes objects",
    # The hub checks every reference against the upload before kustomize runs.
    "kustomize-resource-outside-the-overlay": "points outside the upload",
}
API_VALID_UPLOADS = {"archive-without-chart-yaml"}
"""A .tar.gz without Chart.yaml is a plain YAML directory to the API (the CLI was told .tgz)."""


@pytest.mark.parametrize(
    "case", [c for c in BAD_SOURCES if c.id not in API_VALID_UPLOADS], ids=lambda case: case.id
)
def test_a_bad_source_uploaded_to_the_api_is_a_400_and_writes_nothing(
    case: BadSource, api_hub: LiveHub, tmp_path: Path
) -> None:
    before = api_hub.last_sequences()
    path = case.write(tmp_path)
    filename, content = source_upload(path)
    spec: dict[str, object] = {"name": "bad-upload"}
    if case.values is not None:
        spec["values"] = yaml.safe_load(case.values)
    answer = api_hub.upload(api_hub.admin_token(), spec, filename, content)
    assert_clear_http_error(answer, 400, API_SOURCE_EXPECT.get(case.id, case.expect))
    assert api_hub.last_sequences() == before


@dataclass(frozen=True)
class ApiCase:
    id: str
    method: str
    path: str
    body: bytes | None
    status: int
    expect: str
    content_type: str = "application/json"


def json_body(value: object) -> bytes:
    return orjson.dumps(value)


def target(name: str) -> dict[str, str]:
    return {"kind": "ConfigMap", "namespace": "default", "name": name}


API_CASES = [
    ApiCase("json-truncated", "POST", "/api/v1/clusters", b'{"name": ', 400, "truncated"),
    ApiCase("json-not-json", "POST", "/api/v1/clusters", b"name=x", 400, "malformed"),
    ApiCase(
        "cluster-name-invalid",
        "POST",
        "/api/v1/clusters",
        json_body({"name": "Bad_Name"}),
        400,
        "invalid cluster name",
    ),
    ApiCase(
        "cluster-label-key-invalid",
        "POST",
        "/api/v1/clusters",
        json_body({"name": "fresh", "labels": {"bad key!": "v"}}),
        400,
        "invalid label key",
    ),
    ApiCase(
        "cluster-already-registered",
        "POST",
        "/api/v1/clusters",
        json_body({"name": "east"}),
        409,
        "east",
    ),
    ApiCase("cluster-path-with-dots", "GET", "/api/v1/clusters/a.b", None, 400, "invalid cluster"),
    ApiCase(
        "labels-of-a-missing-cluster",
        "PATCH",
        "/api/v1/clusters/ghost/labels",
        json_body({"set": {"a": "b"}}),
        404,
        "not registered",
    ),
    ApiCase("deregister-missing-cluster", "DELETE", "/api/v1/clusters/ghost", None, 404, "ghost"),
    ApiCase(
        "override-on-a-missing-taskset",
        "PUT",
        "/api/v1/tasksets/nope/overrides/o1",
        json_body({"cluster": "east", "patches": [{"target": target("a"), "mergePatch": {}}]}),
        404,
        "never been published",
    ),
    ApiCase(
        "override-on-a-missing-object",
        "PUT",
        "/api/v1/tasksets/web/overrides/o1",
        json_body(
            {"cluster": "east", "patches": [{"target": target("nothere"), "mergePatch": {}}]}
        ),
        400,
        "does not have",
    ),
    ApiCase(
        "override-for-a-missing-cluster",
        "PUT",
        "/api/v1/tasksets/web/overrides/o1",
        json_body({"cluster": "ghost", "patches": [{"target": target("a"), "mergePatch": {}}]}),
        404,
        "not registered",
    ),
    ApiCase(
        "override-values-on-a-yaml-taskset",
        "PUT",
        "/api/v1/tasksets/web/overrides/o1",
        json_body({"cluster": "east", "values": {"a": 1}}),
        400,
        "use a patch instead",
    ),
    ApiCase(
        "override-name-invalid",
        "PUT",
        "/api/v1/tasksets/web/overrides/Bad_Name",
        json_body({"cluster": "east", "values": {"a": 1}}),
        400,
        "invalid override name",
    ),
    ApiCase(
        "override-cluster-and-selector",
        "PUT",
        "/api/v1/tasksets/web/overrides/o1",
        json_body({"cluster": "east", "selector": "env=prod", "values": {}}),
        400,
        "exactly one of a cluster or a selector",
    ),
    ApiCase(
        "override-selector-invalid",
        "PUT",
        "/api/v1/tasksets/web/overrides/o1",
        json_body({"selector": "env in (a", "patches": []}),
        400,
        "invalid selector",
    ),
    ApiCase(
        "override-json-patch-unknown-op",
        "PUT",
        "/api/v1/tasksets/web/overrides/o1",
        json_body(
            {
                "cluster": "east",
                "patches": [{"target": target("a"), "jsonPatch": [{"op": "frob", "path": "/x"}]}],
            }
        ),
        400,
        "`op` must be one of",
    ),
    ApiCase(
        "override-json-patch-missing-path",
        "PUT",
        "/api/v1/tasksets/web/overrides/o1",
        json_body(
            {
                "cluster": "east",
                "patches": [
                    {"target": target("a"), "jsonPatch": [{"op": "remove", "path": "/data/no"}]}
                ],
            }
        ),
        400,
        "does not exist",
    ),
    ApiCase(
        "remove-a-missing-override",
        "DELETE",
        "/api/v1/tasksets/web/overrides/nothere",
        None,
        404,
        "no override named",
    ),
    ApiCase(
        "retire-a-missing-taskset",
        "POST",
        "/api/v1/tasksets/nope/retire",
        b"{}",
        404,
        "never published",
    ),
    ApiCase(
        "resume-a-rollout-not-halted",
        "POST",
        "/api/v1/tasksets/web/rollout/resume",
        None,
        409,
        "not halted",
    ),
    ApiCase(
        "token-with-an-unknown-role",
        "POST",
        "/api/v1/tokens",
        json_body({"role": "god"}),
        400,
        "body field 'role' at $.role: invalid enum value 'god'",
    ),
    ApiCase("revoke-a-missing-token", "DELETE", "/api/v1/tokens/nothere", None, 404, "no token"),
    ApiCase(
        "events-from-seq-negative",
        "GET",
        "/api/v1/events?from_seq=-5",
        None,
        400,
        "query parameter 'from_seq': expected `int` >= 1 (got '-5')",
    ),
    ApiCase(
        "cluster-name-wrong-type",
        "POST",
        "/api/v1/clusters",
        json_body({"name": 5}),
        400,
        "body field 'name' at $.name: expected `str`, got `int`",
    ),
    ApiCase(
        "cluster-labels-not-an-object",
        "POST",
        "/api/v1/clusters",
        json_body({"name": "fresh", "labels": ["env=prod"]}),
        400,
        "body field 'labels' at $.labels: expected `object`, got `array`",
    ),
    ApiCase("events-since-not-a-time", "GET", "/api/v1/events?since=yesterday", None, 400, "since"),
    ApiCase("events-limit-too-large", "GET", "/api/v1/events?limit=100000000", None, 400, "limit"),
    ApiCase("events-unknown-stream", "GET", "/api/v1/events?stream=secrets", None, 400, "stream"),
    ApiCase("state-at-not-a-time", "GET", "/api/v1/clusters/east/state?at=never", None, 400, "at"),
    ApiCase(
        "preview-for-a-missing-cluster",
        "GET",
        "/api/v1/tasksets/web/overrides-preview?cluster=ghost",
        None,
        404,
        "not registered",
    ),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda case: case.id)
def test_a_bad_api_request_is_a_clear_4xx_and_writes_nothing(
    case: ApiCase, api_hub: LiveHub
) -> None:
    before = api_hub.last_sequences()
    headers = {"Content-Type": case.content_type} if case.body is not None else {}
    answer = api_hub.http(
        case.method, case.path, token=api_hub.admin_token(), body=case.body, headers=headers
    )
    assert_clear_http_error(answer, case.status, case.expect)
    assert api_hub.last_sequences() == before


PUBLISH_SPEC_CASES = [
    ("spec-selector-invalid", {"name": "x", "placement": {"selector": "env in (a"}}, "selector"),
    ("spec-cluster-name-invalid", {"name": "x", "placement": {"clusters": ["Bad_C"]}}, "cluster"),
    ("spec-namespace-invalid", {"name": "x", "namespace": "Bad NS"}, "namespace"),
    ("spec-path-escapes-the-archive", {"name": "x", "path": "../../etc"}, "relative path"),
    ("spec-rollout-negative", {"name": "x", "rollout": {"batch_size": -1}}, "negative"),
]


@pytest.mark.parametrize(
    ("spec", "expect"),
    [(spec, expect) for _, spec, expect in PUBLISH_SPEC_CASES],
    ids=[case_id for case_id, _, _ in PUBLISH_SPEC_CASES],
)
def test_a_bad_publish_spec_is_a_400_and_writes_nothing(
    spec: dict[str, object], expect: str, api_hub: LiveHub, tmp_path: Path
) -> None:
    before = api_hub.last_sequences()
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "cm.yaml").write_bytes(CONFIGMAP)
    filename, content = source_upload(directory)
    answer = api_hub.upload(api_hub.admin_token(), spec, filename, content)
    assert_clear_http_error(answer, 400, expect)
    assert api_hub.last_sequences() == before


def test_a_body_over_the_limit_is_a_413_before_it_is_read(api_hub: LiveHub) -> None:
    before = api_hub.last_sequences()
    status, body = api_hub.declare_body("POST", "/api/v1/clusters", 17 << 20)
    assert status == 413, body[:300]
    assert "too large" in orjson.loads(body)["error"]
    assert api_hub.last_sequences() == before


def test_a_json_body_nested_too_deep_is_a_400(api_hub: LiveHub) -> None:
    before = api_hub.last_sequences()
    body = b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    answer = api_hub.http(
        "POST",
        "/api/v1/clusters",
        token=api_hub.admin_token(),
        body=body,
        headers={"Content-Type": "application/json"},
    )
    assert api_hub.last_sequences() == before
    assert answer.status == 400, answer.body[:200]


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a ConfigMap, and remembers that somebody asked."""

    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fetched}\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.mark.parametrize("spelling", [*BYPASSES, "http://{recorder}/internal/secret.yaml"])
def test_an_uploaded_overlay_cannot_make_the_hub_fetch_a_url(
    spelling: str, api_hub: LiveHub, tmp_path: Path
) -> None:
    """A Kustomize overlay may name remote resources; uploaded to the hub, it must not turn
    the hub into a client of whatever address the uploader picks (an internal service, a
    cloud metadata endpoint). Each spelling once slipped past a look-for-URLs check."""
    _RecordingHandler.asked = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        overlay = tmp_path / "overlay"
        overlay.mkdir()
        reference = spelling.replace("{recorder}", f"127.0.0.1:{server.server_address[1]}")
        (overlay / "kustomization.yaml").write_text(f"resources:\n- {reference!r}\n")
        before = api_hub.last_sequences()
        filename, content = source_upload(overlay)
        answer = api_hub.upload(api_hub.admin_token(), {"name": "fetcher"}, filename, content)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert _RecordingHandler.asked == [], f"the hub fetched {_RecordingHandler.asked}"
    assert_clear_http_error(answer, 400, f"overlay/kustomization.yaml: resources[0] {reference!r}")
    assert "is refused: " in answer.json()["error"]
    assert api_hub.last_sequences() == before
