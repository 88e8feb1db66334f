"""`fleetbus completion bash|zsh|fish`: the scripts load in their shells and complete the real tree.

bash is driven through its own completion machinery (`complete -p`, the registered function
with COMP_WORDS/COMP_CWORD as readline sets them, both with and without `=` split off); fish
through `complete -C`, which asks fish what it would offer; zsh through a real interactive zsh
on a pseudo-terminal (zsh/zpty) that is sent a TAB. zsh and fish are optional on this machine:
their tests say so when the shell is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetbus.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]


def completion(shell: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fleetbus.cli", "completion", shell],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "fleetbus.bash"
    path.write_text(completion("bash"))
    return path


BASH_CASES = [
    (("",), " ".join(COMMANDS)),
    (("cl",), "cluster"),
    (("cluster", ""), "register ls show label rm"),
    (("cluster", "ls", "-o", ""), "table wide json yaml"),
    (("cluster", "ls", "--output=w"), "wide"),
    (("cluster", "ls", "--output", "=", "y"), "yaml"),
    (("cluster", "ls", "-o", "wide", "--sel"), "--selector"),
    (("--help", "override", "l"), "ls"),
    (("status", "--wat"), "--watch"),
    (("completion", ""), "bash zsh fish"),
    (("edge", "--health-addr", ""), ""),
]


def test_the_bash_script_loads_and_completes_commands_options_and_values(
    bash_script: Path, tmp_path: Path
) -> None:
    (tmp_path / "bundle-dir").mkdir()
    (tmp_path / "bundle-file").write_text("")
    lines = [f"source {bash_script}", "complete -p fleetbus"]
    lines.append(
        't() { COMP_WORDS=(fleetbus "$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); '
        'COMPREPLY=(); _fleetbus; echo "${COMPREPLY[*]}"; }'
    )
    cases = [
        *BASH_CASES,
        (("edge", "--bundle", f"{tmp_path}/bundle-"), f"{tmp_path}/bundle-dir"),
        (("publish", f"{tmp_path}/bundle-f"), f"{tmp_path}/bundle-file"),
    ]
    for words, _ in cases:
        lines.append("t " + " ".join(f"'{w}'" for w in words))
    done = subprocess.run(
        ["bash", "-c", "\n".join(lines)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr, done.stderr
    out = done.stdout.split("\n")
    assert out[0] == "complete -F _fleetbus fleetbus"
    for (words, wanted), got in zip(cases, out[1:], strict=False):
        assert got == wanted, (words, got)


def test_the_root_completion_lists_exactly_the_real_subcommands(bash_script: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", f"source {bash_script}; echo ${{_fleetbus_commands[fleetbus]}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == list(COMMANDS)
    assert "completion" in COMMANDS


def test_an_unknown_shell_is_refused_with_the_choices() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fleetbus.cli", "completion", "tcsh"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid choice: 'tcsh'" in done.stderr
    assert "'bash', 'zsh', 'fish'" in done.stderr
    assert not done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed here")
def test_fish_offers_the_subcommands_options_and_choices(tmp_path: Path) -> None:
    script = tmp_path / "fleetbus.fish"
    script.write_text(completion("fish"))

    def offered(line: str) -> list[str]:
        done = subprocess.run(
            ["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert not done.stderr, done.stderr
        return [entry.split("\t")[0] for entry in done.stdout.splitlines()]

    assert offered("fleetbus cl") == ["cluster"]
    assert offered("fleetbus cluster ") == ["label", "ls", "register", "rm", "show"]
    assert offered("fleetbus cluster ls -o ") == ["json", "table", "wide", "yaml"]
    assert offered("fleetbus cluster ls --output=y") == ["--output=yaml"]
    assert "--selector" in offered("fleetbus status --se")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here")
def test_zsh_completes_on_tab_in_an_interactive_shell(tmp_path: Path) -> None:
    home = tmp_path / "zdot"
    home.mkdir()
    script = tmp_path / "fleetbus.zsh"
    script.write_text(completion("zsh"))
    (home / ".zshrc").write_text(
        f"PS1='> '\nautoload -Uz compinit && compinit -u -D\nsource {script}\n"
    )
    driver = tmp_path / "drive.zsh"
    driver.write_text(
        "zmodload zsh/zpty\n"
        f'zpty -b z "ZDOTDIR={home} zsh -i"\n'
        "zpty -r z line '*> '\n"
        "zpty -w -n z $'fleetbus cluster l\\t'\n"
        "out=''\n"
        "for i in {1..50}; do\n"
        "  while zpty -r -t z chunk; do out+=$chunk; done\n"
        "  [[ $out == *'list registered clusters'* ]] && break\n"
        "  sleep 0.1\n"
        "done\n"
        "print -r -- $out\n"
        "zpty -d z\n"
    )
    done = subprocess.run(
        ["zsh", "-f", str(driver)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "ls     -- list registered clusters" in done.stdout, done.stdout
    assert "label  -- set (KEY=VALUE) or remove (KEY-) labels" in done.stdout
