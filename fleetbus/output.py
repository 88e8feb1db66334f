"""How read commands print: `-o table` (default), `-o wide` (more columns), `-o json`, `-o yaml`.

`json` and `yaml` print the whole document the API answered (times as RFC 3339 text, the same
in both), so scripts get every field; `table` and `wide` print aligned columns under upper-case
headers, like kubectl, with `-` for an empty cell.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
import yaml

FORMATS = ("table", "wide", "json", "yaml")


def add_output_option(
    parser: argparse.ArgumentParser, *, formats: Sequence[str] = FORMATS, default: str = "table"
) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=tuple(formats),
        default=default,
        help=f"output format: {', '.join(formats)} (default {default})",
    )


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Any], object]
    wide: bool = False
    """Shown by `-o wide` only."""


def plain(document: Any) -> Any:
    """The document as JSON types (structs, datetimes and bytes turned into JSON's own)."""
    return orjson.loads(orjson.dumps(msgspec.to_builtins(document)))


def write_document(document: Any, output: str) -> None:
    if output == "json":
        text = orjson.dumps(msgspec.to_builtins(document), option=orjson.OPT_INDENT_2).decode()
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(
            yaml.safe_dump(plain(document), sort_keys=False, allow_unicode=True, width=1000)
        )


def cell(value: object) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table_text(rows: Sequence[Any], columns: Sequence[Column], *, wide: bool = False) -> str:
    shown = [c for c in columns if wide or not c.wide]
    grid = [[c.header for c in shown]]
    grid += [[cell(c.value(row)) for c in shown] for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(shown))]
    lines = [
        "  ".join(text.ljust(widths[i]) for i, text in enumerate(line)).rstrip() for line in grid
    ]
    return "\n".join(lines) + "\n"


def emit(
    document: Any,
    output: str,
    *,
    rows: Sequence[Any] | None = None,
    columns: Sequence[Column] = (),
) -> None:
    """Print `document` as JSON or YAML, or `rows` (default: the document) as a table."""
    if output in ("json", "yaml"):
        write_document(document, output)
        return
    sys.stdout.write(table_text(document if rows is None else rows, columns, wide=output == "wide"))


def when(value: object) -> str:
    """An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC), or `-`."""
    return str(value)[:19].replace("T", " ") if value else "-"
