"""R5: malformed input is refused with one clear error, and nothing reaches the log.

A table of bad inputs goes through every door a user has: the CLI (sources, arguments, values
files), the HTTP API (uploads, bodies, names, selectors, overrides) and the bus (garbage where
the hub's services listen). Every case must end in a clear error — exit code 2 and one line
saying what is wrong, or a 4xx with a JSON error — and the hub's streams must hold exactly what
they held before (their last sequences, read from nats-server's own monitoring, are unchanged).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetbus.cli import main
from tests.faults.harness import record_figures
from tests.security.bad_inputs import BAD_SOURCES, CONFIGMAP, BadSource
from tests.security.live_hub import LiveHub
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
    CliCase("events-from-seq-not-a-number", ("events", "--from-seq", "abc"), "invalid int value"),
    CliCase("events-without-a-hub", ("events", "--data-dir", "{empty}"), "fleetbus up"),
    CliCase("up-http-not-host-port", ("up", "--http", "nope"), "expected HOST:PORT"),
    CliCase("up-nats-url-not-a-url", ("up", "--nats-url", "foo"), "expected nats://"),
    CliCase("up-replicas-out-of-range", ("up", "--replicas", "9"), "replicas must be 1 to 5"),
    CliCase("up-on-a-data-dir-in-use", ("up", "--data-dir", "{data}"), "another hub is running"),
    CliCase("unknown-command", ("frobnicate",), "invalid choice"),
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
    places = {
        "{ok}": str(ok),
        "{chart}": str(chart),
        "{values}": str(values),
        "{missing}": str(tmp_path / "missing.yaml"),
        "{empty}": str(tmp_path / "no-hub-here"),
        "{data}": str(live_hub.data_dir),
    }
    argv = [places.get(arg, arg) for arg in case.argv]
    assert_one_clear_error(run_cli(argv, capsys, case.stdin), case.expect)
    assert live_hub.last_sequences() == before


def test_the_bad_input_table_has_at_least_fifty_cases() -> None:
    tables = {
        "cli_sources": len(BAD_SOURCES),
        "cli_arguments": len(CLI_CASES),
        "bus_inventory_garbage": len(GARBAGE_INVENTORIES),
        "bus_refused_appends": len(BAD_APPENDS),
    }
    record_figures("R5 bad input table", total=sum(tables.values()), **tables)
    assert sum(tables.values()) >= 50
