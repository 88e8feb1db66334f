"""`fleetbus --help` all the way down: every command, option and argument says what it is.

The test walks the whole command tree (every module's subcommands, as completion sees them)
and fails on a command, option or positional argument without help, on help that is not one
short phrase in the house style, and on an example that the parser would refuse.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex

import pytest

from fleetbus.cli import COMMANDS, build_parser
from fleetbus.completion import full_parser
from fleetbus.helptext import EXAMPLES, HelpFormatter

MAX_HELP = 240


def commands(
    parser: argparse.ArgumentParser, path: str = "fleetbus"
) -> list[tuple[str, argparse.ArgumentParser, str | None]]:
    """(path, parser, the help its parent lists it with) for every command under `parser`."""
    found: list[tuple[str, argparse.ArgumentParser, str | None]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"{path} {name}", sub, helps.get(name)))
                found += commands(sub, f"{path} {name}")
    return found


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    ]


def style_problems(text: str | None) -> list[str]:
    if not text or text == argparse.SUPPRESS:
        return ["no help"]
    problems = []
    if "\n" in text:
        problems.append("more than one line")
    if text.rstrip().endswith("."):
        problems.append("ends with a period (help is a phrase)")
    if len(text) > MAX_HELP:
        problems.append(f"longer than {MAX_HELP} characters")
    first = text.lstrip("`-$.(")[:1]
    if first.isupper() and not re.match(r"[A-Z]{2,}|[A-Z][a-z]*[A-Z]|Helm|Kubernetes|Git", text):
        problems.append("starts with a capital (help is lower case, like the rest)")
    return problems


TREE = commands(full_parser())


def test_the_tree_holds_every_command_of_the_table() -> None:
    top = {path.split()[1] for path, _, _ in TREE}
    assert top == set(COMMANDS)
    assert len(TREE) >= 60, "subcommands included"


def test_every_command_option_and_argument_has_one_line_of_help_in_one_style() -> None:
    problems: list[str] = []
    for path, parser, help_text in TREE:
        problems += [f"{path}: {p}" for p in style_problems(help_text)]
        if not parser.description:
            problems.append(f"{path}: no description")
        for action in arguments(parser):
            name = "/".join(action.option_strings) or action.dest
            problems += [f"{path} {name}: {p}" for p in style_problems(action.help)]
    assert problems == []


def test_a_command_or_option_without_help_is_caught() -> None:
    parser = argparse.ArgumentParser(prog="fleetbus")
    sub = parser.add_subparsers().add_parser("thing", help="do a thing")
    sub.add_argument("--quietly")
    (_, thing, _), *_ = commands(parser)
    assert [style_problems(a.help) for a in arguments(thing)] == [["no help"]]
    assert style_problems("Does things.") == [
        "ends with a period (help is a phrase)",
        "starts with a capital (help is lower case, like the rest)",
    ]


def example_words(line: str) -> list[str]:
    """The `fleetbus ...` words of an example line, without shell pipes, redirects, comments."""
    text = line.split("#", 1)[0]
    text = text[text.index("fleetbus") :]
    text = re.split(r"\s[|<>]\s|\)", text)[0]
    return shlex.split(text)[1:]


@pytest.mark.parametrize(
    "line", [line for lines in EXAMPLES.values() for line in lines], ids=lambda line: line[:60]
)
def test_every_example_is_accepted_by_the_parser(line: str) -> None:
    words = example_words(line)
    parser = build_parser(words[0])
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            parser.parse_args(words)
        except SystemExit as e:
            pytest.fail(f"{line!r} is refused: {errors.getvalue()} (exit {e.code})")


def test_examples_name_commands_that_exist_and_show_on_their_help_page() -> None:
    pages = {path.removeprefix("fleetbus "): parser for path, parser, _ in TREE}
    assert set(EXAMPLES) <= set(pages)
    for path in ("publish", "status", "cluster show", "controller", "notify add"):
        page = pages[path].format_help()
        assert "examples:\n  fleetbus" in page or "examples:\n  source" in page, path


def test_indented_lines_keep_their_layout_and_prose_is_filled() -> None:
    formatter = HelpFormatter("fleetbus", width=40)
    text = formatter._fill_text(
        "a long paragraph of prose that must be wrapped at forty columns\n\n"
        "    fleetbus publish charts/web --name web --selector env=prod",
        40,
        "",
    )
    prose, example = text.split("\n\n")
    assert all(len(line) <= 40 for line in prose.splitlines())
    assert example == "    fleetbus publish charts/web --name web --selector env=prod"
