"""Shell completion for bash, zsh and fish, generated from the CLI's own argparse tree.

The script carries the whole tree as data (each command path's subcommands, options, which
options take a value and what that value is: a fixed choice, a file, a directory, anything), and
one small function per shell walks the words typed so far over it. So a new subcommand or option
is completed as soon as it is registered, and completing costs no Python start.

Subcommands whose module cannot be imported here (an edge install lacks the hub's packages) are
still completed by name, from `fleetbus.cli.COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from fleetbus.cli import COMMANDS
from fleetbus.helptext import finish_help

SHELLS = ("bash", "zsh", "fish")

FILE = "@file"
DIRECTORY = "@dir"
ANY = "@any"
DIRECTORY_METAVARS = {"DIR", "D"}
FILE_METAVARS = {"F", "FILE", "PATH"}


@dataclass(frozen=True)
class Option:
    names: tuple[str, ...]
    help: str
    value: str | None
    """None for a flag; FILE, DIRECTORY, ANY, or the space-separated choices."""


@dataclass
class Node:
    path: str
    """The command words from the root, space-separated: "fleetbus", "fleetbus cluster ls"."""
    commands: dict[str, str] = field(default_factory=dict)
    """Subcommand name -> its one-line help."""
    options: list[Option] = field(default_factory=list)
    positional: str | None = None
    """What the first positional argument is: FILE, DIRECTORY, choices, or None."""


def full_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand whose module imports here."""
    parser = argparse.ArgumentParser(prog="fleetbus")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    tried: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module not in tried:
            tried.add(module)
            # Not installed here (an edge install): the command is still completed by name.
            with contextlib.suppress(ImportError):
                importlib.import_module(f"fleetbus.commands.{module}").register(subparsers)
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_text)
    finish_help(parser)
    return parser


def _value_kind(action: argparse.Action) -> str | None:
    if action.nargs == 0:
        return None
    if action.choices is not None:
        return " ".join(str(choice) for choice in action.choices)
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if metavar in DIRECTORY_METAVARS:
        return DIRECTORY
    if action.type is Path or metavar in FILE_METAVARS:
        return FILE
    return ANY


def walk(parser: argparse.ArgumentParser, path: str = "fleetbus") -> list[Node]:
    """Every command path of the tree, depth first."""
    node = Node(path=path)
    nodes = [node]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, child in action.choices.items():
                node.commands[name] = helps.get(name, "")
                nodes.extend(walk(child, f"{path} {name}"))
        elif action.option_strings:
            help_text = "" if action.help == argparse.SUPPRESS else (action.help or "")
            node.options.append(
                Option(tuple(action.option_strings), help_text.split("\n")[0], _value_kind(action))
            )
        elif node.positional is None:
            node.positional = _value_kind(action)
    return nodes


def script(shell: str, nodes: list[Node] | None = None) -> str:
    nodes = nodes if nodes is not None else walk(full_parser())
    if shell == "bash":
        return bash_script(nodes)
    if shell == "zsh":
        return zsh_script(nodes)
    if shell == "fish":
        return fish_script(nodes)
    raise ValueError(f"no completion for shell {shell!r}: choose one of {', '.join(SHELLS)}")


def _tables(nodes: list[Node]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    commands = {n.path: " ".join(n.commands) for n in nodes if n.commands}
    options = {n.path: " ".join(name for o in n.options for name in o.names) for n in nodes}
    values = {
        f"{n.path}|{name}": o.value for n in nodes for o in n.options if o.value for name in o.names
    }
    for n in nodes:
        if n.positional and not n.commands:
            values[f"{n.path}|"] = n.positional
    return commands, options, values


def _assoc_bash(name: str, table: dict[str, str]) -> str:
    body = "\n".join(f"  [{shlex.quote(k)}]={shlex.quote(v)}" for k, v in sorted(table.items()))
    return f"declare -gA {name}=(\n{body}\n)"


BASH_FUNCTION = r"""
_fleetbus() {
    local cur="${COMP_WORDS[COMP_CWORD]}" cmdpath=fleetbus word subs kind option i
    local expecting=""
    COMPREPLY=()
    for (( i = 1; i < COMP_CWORD; i++ )); do
        word="${COMP_WORDS[i]}"
        [[ "$word" == "=" ]] && continue  # bash splits --option=value around the =
        if [[ -n "$expecting" ]]; then expecting=""; continue; fi
        if [[ "$word" == -* ]]; then
            [[ "$word" != *=* && -n "${_fleetbus_values["$cmdpath|$word"]+set}" ]] && expecting=1
            continue
        fi
        subs=" ${_fleetbus_commands["$cmdpath"]} "
        [[ "$subs" == *" $word "* ]] && cmdpath="$cmdpath $word"
    done
    option="${COMP_WORDS[COMP_CWORD-1]}"
    [[ "$cur" == "=" ]] && cur=""
    [[ "$option" == "=" ]] && option="${COMP_WORDS[COMP_CWORD-2]}"
    if [[ -n "$expecting" ]]; then
        kind="${_fleetbus_values["$cmdpath|$option"]}"
    elif [[ "$cur" == --*=* ]]; then
        option="${cur%%=*}"
        kind="${_fleetbus_values["$cmdpath|$option"]}"
        cur="${cur#*=}"
    elif [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "${_fleetbus_options["$cmdpath"]}" -- "$cur") )
        return 0
    elif [[ -n "${_fleetbus_commands["$cmdpath"]}" ]]; then
        COMPREPLY=( $(compgen -W "${_fleetbus_commands["$cmdpath"]}" -- "$cur") )
        return 0
    else
        kind="${_fleetbus_values["$cmdpath|"]}"
    fi
    case "$kind" in
        "" | @any) ;;
        @file) compopt -o filenames 2>/dev/null; COMPREPLY=( $(compgen -f -- "$cur") ) ;;
        @dir) compopt -o filenames 2>/dev/null; COMPREPLY=( $(compgen -d -- "$cur") ) ;;
        *) COMPREPLY=( $(compgen -W "$kind" -- "$cur") ) ;;
    esac
    return 0
}
complete -F _fleetbus fleetbus
"""


def bash_script(nodes: list[Node]) -> str:
    commands, options, values = _tables(nodes)
    return "\n".join(
        [
            "# fleetbus completion for bash; load it with:  source <(fleetbus completion bash)",
            _assoc_bash("_fleetbus_commands", commands),
            _assoc_bash("_fleetbus_options", options),
            _assoc_bash("_fleetbus_values", values),
            BASH_FUNCTION,
        ]
    )


def _zsh_described(nodes: list[Node]) -> dict[str, str]:
    """Per path, "name:help" lines for `_describe` (commands and options)."""

    def entry(name: str, help_text: str) -> str:
        return name.replace(":", "\\:") + ":" + help_text

    described = {}
    for n in nodes:
        if n.commands:
            described[n.path] = "\n".join(entry(k, v) for k, v in n.commands.items())
        described[f"{n.path}|-"] = "\n".join(
            entry(name, o.help) for o in n.options for name in o.names
        )
    return described


ZSH_FUNCTION = r"""
_fleetbus() {
    local cur="${words[CURRENT]}" cmdpath=fleetbus word kind option i expecting=""
    local -a entries
    for (( i = 2; i < CURRENT; i++ )); do
        word="${words[i]}"
        if [[ -n "$expecting" ]]; then expecting=""; continue; fi
        if [[ "$word" == -* ]]; then
            [[ "$word" != *=* && -n "${_fleetbus_values[$cmdpath|$word]+set}" ]] && expecting=1
            continue
        fi
        if (( ${${=_fleetbus_commands[$cmdpath]}[(Ie)$word]} )); then
            cmdpath="$cmdpath $word"
        fi
    done
    if [[ -n "$expecting" ]]; then
        kind="${_fleetbus_values[$cmdpath|${words[CURRENT-1]}]}"
    elif [[ "$cur" == --*=* ]]; then
        option="${cur%%=*}"
        kind="${_fleetbus_values[$cmdpath|$option]}"
        compset -P '*='
    elif [[ "$cur" == -* ]]; then
        entries=( "${(@f)_fleetbus_described[$cmdpath|-]}" )
        _describe -t options 'option' entries
        return
    elif [[ -n "${_fleetbus_commands[$cmdpath]}" ]]; then
        entries=( "${(@f)_fleetbus_described[$cmdpath]}" )
        _describe -t commands 'command' entries
        return
    else
        kind="${_fleetbus_values[$cmdpath|]}"
    fi
    case "$kind" in
        "") ;;
        @any) _message 'value' ;;
        @file) _files ;;
        @dir) _files -/ ;;
        *) compadd -- ${=kind} ;;
    esac
}
if ! (( $+functions[compdef] )); then
    autoload -Uz compinit && compinit
fi
compdef _fleetbus fleetbus
"""


def _assoc_zsh(name: str, table: dict[str, str]) -> str:
    body = "\n".join(f"  {shlex.quote(k)} {shlex.quote(v)}" for k, v in sorted(table.items()))
    return f"typeset -gA {name}\n{name}=(\n{body}\n)"


def zsh_script(nodes: list[Node]) -> str:
    commands, _, values = _tables(nodes)
    return "\n".join(
        [
            "#compdef fleetbus",
            "# fleetbus completion for zsh; load it with:  source <(fleetbus completion zsh)",
            _assoc_zsh("_fleetbus_commands", commands),
            _assoc_zsh("_fleetbus_values", values),
            _assoc_zsh("_fleetbus_described", _zsh_described(nodes)),
            ZSH_FUNCTION,
        ]
    )


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


FISH_FUNCTIONS = r"""
function __fleetbus_path
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l cmdpath fleetbus
    set -l expecting 0
    for word in $tokens
        if test $expecting = 1
            set expecting 0
            continue
        end
        if string match -q -- '-*' $word
            if not string match -q -- '*=*' $word
                and contains -- "$cmdpath|$word" $__fleetbus_valued
                set expecting 1
            end
            continue
        end
        if contains -- "$cmdpath|$word" $__fleetbus_subcommands
            set cmdpath "$cmdpath $word"
        end
    end
    echo $cmdpath
end

function __fleetbus_at
    test (__fleetbus_path) = "$argv[1]"
end

complete -c fleetbus -e
complete -c fleetbus -f
"""


def fish_script(nodes: list[Node]) -> str:
    subcommands = [f"{n.path}|{name}" for n in nodes for name in n.commands]
    valued = [f"{n.path}|{name}" for n in nodes for o in n.options if o.value for name in o.names]
    lines = [
        "# fleetbus completion for fish; load it with:  fleetbus completion fish | source",
        "set -g __fleetbus_subcommands " + " ".join(_fish_quote(s) for s in subcommands),
        "set -g __fleetbus_valued " + " ".join(_fish_quote(s) for s in valued),
        FISH_FUNCTIONS,
    ]
    for n in nodes:
        at = f"-n {_fish_quote('__fleetbus_at ' + shlex.quote(n.path))}"
        for name, help_text in n.commands.items():
            lines.append(
                f"complete -c fleetbus {at} -a {_fish_quote(name)} -d {_fish_quote(help_text)}"
            )
        for option in n.options:
            flags = []
            for name in option.names:
                if name.startswith("--"):
                    flags.append(f"-l {_fish_quote(name[2:])}")
                elif len(name) == 2:
                    flags.append(f"-s {_fish_quote(name[1:])}")
                else:
                    flags.append(f"-o {_fish_quote(name[1:])}")
            lines.append(
                f"complete -c fleetbus {at} {' '.join(flags)}"
                f"{_fish_value(option.value)} -d {_fish_quote(option.help)}"
            )
        if n.positional and not n.commands:
            lines.append(f"complete -c fleetbus {at}{_fish_value(n.positional)}")
    return "\n".join(lines) + "\n"


def _fish_value(value: str | None) -> str:
    if value is None:
        return ""
    if value == FILE:
        return " -r -F"
    if value == DIRECTORY:
        return " -x -a '(__fish_complete_directories)'"
    if value == ANY:
        return " -x"
    return f" -x -a {_fish_quote(value)}"
