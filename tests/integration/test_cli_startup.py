"""`fleetbus` starts with only what the command needs: `--help` imports no component at all."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from fleetbus import cli

REPO = Path(__file__).resolve().parents[2]
HEAVY = (
    "fleetbus.hub",
    "fleetbus.commands",
    "api",
    "scheduler",
    "projector",
    "normalizer",
    "events",
    "edge_connector",
    "cluster_controller",
    "helm_python",
    "nats",
    "litestar",
    "lightkube",
    "yaml",
    "msgspec",
    "asyncio",
)


def modules_loaded_by(*words: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    probe = (
        "import sys\n"
        "from fleetbus import cli\n"
        "try:\n"
        f"    cli.main({list(words)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(result.stderr.split()), result


@pytest.mark.parametrize("words", [["--help"], [], ["no-such-command"]], ids=str)
def test_help_and_mistakes_import_no_component(words: list[str]) -> None:
    loaded, _ = modules_loaded_by(*words)
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY) == []


def test_the_help_lists_every_command_with_its_own_help() -> None:
    _, result = modules_loaded_by("--help")
    for name, (_, help_text) in cli.COMMANDS.items():
        assert name in result.stdout
        assert help_text[:40] in " ".join(result.stdout.split())


def test_a_command_imports_its_own_module_and_not_the_hub() -> None:
    loaded, _ = modules_loaded_by("render", "--help")
    assert "fleetbus.commands.render" in loaded
    assert "fleetbus.hub" not in loaded
    assert "fleetbus.commands.up" not in loaded


@pytest.mark.parametrize("module", sorted({module for module, _ in cli.COMMANDS.values()}))
def test_the_table_names_every_command_a_module_registers_with_its_help(module: str) -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(f"fleetbus.commands.{module}").register(subparsers)
    registered = {action.dest: action.help for action in subparsers._choices_actions}
    expected = {
        name: help_text for name, (owner, help_text) in cli.COMMANDS.items() if owner == module
    }
    assert registered == expected


def test_a_second_command_of_a_module_runs_with_its_own_arguments() -> None:
    args = cli.build_parser("retire").parse_args(["retire", "shop", "--reason", "done"])
    assert (args.command, args.name, args.reason) == ("retire", "shop", "done")


def test_the_hub_and_the_scheduler_load_the_helm_engine_only_when_they_render_a_chart() -> None:
    probe = (
        "import sys\n"
        "import api.app, fleetbus.hub, fleetbus.commands.scheduler, fleetbus.commands.up\n"
        "from fleetbus.renderer import ChartArchiveRenderer\n"
        "print('helm_python' in sys.modules, 'normalizer.helm' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"], "~65 MiB resident the hub need not pay"
