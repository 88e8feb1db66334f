"""The lean edge process: its command line and environment, and versions read without
`importlib.metadata` while the edge's modules are imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetbus.edge_process import (
    ALLOCATOR_ENV,
    INTERPRETER_FLAGS,
    LEAN_ENV,
    PackageNotFoundError,
    distribution_version,
    lean_command,
    lean_environment,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_lean_command_runs_the_same_fleetbus_arguments_under_the_edge_flags() -> None:
    command = lean_command(["edge", "--bundle", "b", "--sim"])
    assert command == [
        sys.executable,
        "-OO",
        "-X",
        "no_debug_ranges",
        "-m",
        "fleetbus.cli",
        "edge",
        "--bundle",
        "b",
        "--sim",
    ]
    assert tuple(command[1:4]) == INTERPRETER_FLAGS


def test_the_lean_command_keeps_the_interpreter_options_it_was_started_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "_xoptions", {"importtime": True, "faulthandler": True, "x": "1"})
    monkeypatch.setattr(sys, "warnoptions", ["error"])
    command = lean_command(["edge"])
    assert command[4:12] == ["-X", "importtime", "-X", "faulthandler", "-X", "x=1", "-W", "error"]
    assert command[12:] == ["-m", "fleetbus.cli", "edge"]


def test_the_lean_environment_adds_allocator_settings_and_keeps_what_was_set() -> None:
    environ = lean_environment({"PATH": "/bin", "MALLOC_ARENA_MAX": "4"})
    assert environ["PATH"] == "/bin"
    assert environ["MALLOC_ARENA_MAX"] == "4", "an operator's own setting wins"
    assert environ["MALLOC_TRIM_THRESHOLD_"] == ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"]
    assert environ[LEAN_ENV] == "1", "marked, so it is not executed again"


def _dist(root: Path, folder: str, metadata: str) -> None:
    (root / folder).mkdir(parents=True)
    (root / folder / "METADATA").write_text(metadata)


def test_a_distribution_version_is_read_from_its_metadata_file(tmp_path: Path) -> None:
    _dist(
        tmp_path,
        "nats_py-2.16.0.dist-info",
        "Metadata-Version: 2.1\nName: nats-py\nVersion: 2.16.0\n\nVersion: not-this\n",
    )
    _dist(tmp_path, "other-1.0.dist-info", "Name: other\n\nVersion: 9\n")
    path = [str(tmp_path / "missing"), str(tmp_path)]
    assert distribution_version("nats-py", path) == "2.16.0"
    assert distribution_version("NATS.py", path) == "2.16.0"
    with pytest.raises(PackageNotFoundError):
        distribution_version("other", path)  # no Version header before the body
    with pytest.raises(PackageNotFoundError):
        distribution_version("absent", path)


def test_installed_versions_read_by_the_stand_in_match_the_real_metadata() -> None:
    from importlib.metadata import version

    for name in ("nats-py", "httpx2", "fleetbus", "msgspec"):
        assert distribution_version(name) == version(name)


def test_the_edge_modules_import_without_importlib_metadata_and_it_works_afterwards() -> None:
    """In a fresh interpreter: importing the edge (nats-py, httpx2, fleetbus.probes ask for
    versions at import) loads neither importlib.metadata nor what it pulls in (zipfile, csv);
    once done, the real module is what an import gets."""
    script = """
import sys
from fleetbus.edge_process import distribution_versions_without_metadata
with distribution_versions_without_metadata():
    import fleetbus.edge, edge_connector.kube_executor, fleetbus.edge_controller
import httpx2, nats.aio.client
from fleetbus.probes import fleetbus_version
assert httpx2.__version__ not in ("", "0.0.0"), httpx2.__version__
assert nats.aio.client.__version__ != "0.0.0"
assert fleetbus_version() != "unknown"
loaded = sorted({"importlib.metadata", "zipfile", "csv"} & set(sys.modules))
print("loaded:", loaded)
import importlib.metadata
print("after:", importlib.metadata.version("msgspec"), hasattr(importlib.metadata, "entry_points"))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "loaded: []"
    assert lines[1].startswith("after: ")
    assert lines[1].endswith(" True")


def _run(code: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO), **environ},
        timeout=60,
        check=False,
    )


EXEC_PROBE = """
import os, sys, runpy
def execve(path, args, env):
    print("EXEC", args[1:7], env.get("MALLOC_ARENA_MAX"), env.get("FLEETBUS_EDGE_LEAN"))
    sys.exit(0)
os.execve = execve
sys.argv = ["fleetbus", "edge", "--help"]
runpy.run_module("fleetbus.cli", run_name="__main__")
"""


def test_fleetbus_edge_executes_itself_again_lean_unless_told_not_to() -> None:
    """Through the real entry point: `fleetbus edge` asks to be executed again under the
    flags (os.execve is recorded here instead of run); FLEETBUS_EDGE_LEAN=0, or a process
    already executed again, runs as started and prints its help."""
    asked = _run(EXEC_PROBE, {})
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.splitlines() == [
        "EXEC ['-OO', '-X', 'no_debug_ranges', '-m', 'fleetbus.cli', 'edge'] 2 1"
    ]
    for environ in ({LEAN_ENV: "0"}, {LEAN_ENV: "1"}):
        kept = _run(EXEC_PROBE, environ)
        assert kept.returncode == 0, kept.stderr
        assert "EXEC" not in kept.stdout
        assert "--kubeconfig" in kept.stdout, "the edge's help is printed"


def test_the_lean_command_itself_runs_the_edge_command() -> None:
    """What is executed: the edge's help works under -OO (no docstring is needed)."""
    done = subprocess.run(
        lean_command(["edge", "--help"]),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=lean_environment({"PATH": "/usr/bin:/bin", "HOME": str(REPO)}),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--kubeconfig" in done.stdout
    assert "--leaf-memory-limit" in done.stdout
