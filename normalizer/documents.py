"""YAML text to Kubernetes documents, each remembering where it came from.

Every source format ends up as YAML text (files, `kubectl kustomize` output, Helm's rendered
templates); this module is the one place it is parsed, so every format reports a bad document
the same way: file and line.

The parser reads YAML the way Kubernetes' own YAML-to-JSON conversion does
(`normalizer.kubeyaml`), so the objects are the ones the apiserver would see, and a
`kind: List` expands into its items.

Helm's rendered templates are split into documents the way Helm splits them (its
`releaseutil.SplitManifests`), not by the YAML stream's own markers: Helm's regular expression
also cuts at `---` followed by text on the same line (`---# comment`, which a template trimming
its newline leaves behind), and what Helm sees as separate objects must be separate here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from normalizer.errors import InvalidYaml, SourceNotFound
from normalizer.fastyaml import fast_documents
from normalizer.kubeyaml import JsonBuilder, KubernetesYamlLoader

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One parsed document and where it was read: a source name and the line it starts on."""

    source: str
    line: int
    manifest: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


HELM_SEPARATOR = re.compile(r"(?:^|[\t\n\f\r ]*\n)---[\t\n\f\r ]*")
"""Helm's `releaseutil` separator, `(?:^|\\s*\\n)---\\s*`, with Go's `\\s` (ASCII whitespace)."""
GO_SPACE = "\t\n\v\f\r \x85\xa0"
"""What Go's strings.TrimSpace trims (Unicode White_Space; these are the ones in practice)."""


_HELM_SPACE = frozenset("\t\n\f\r ")


def helm_separators(trimmed: str) -> Iterator[tuple[int, int]]:
    """Where `HELM_SEPARATOR` matches in `trimmed` (start, end), as `finditer` finds them.

    Found with fixed-string searches for a line feed before `---`: the regular expression
    itself is slow over the megabytes of dashboards some charts render."""
    position = 0
    if trimmed.startswith("---"):
        end = 3
        while end < len(trimmed) and trimmed[end] in _HELM_SPACE:
            end += 1
        yield 0, end
        position = end
    while True:
        found = trimmed.find("\n---", position)
        if found < 0:
            return
        start = found
        while start > position and trimmed[start - 1] in _HELM_SPACE:
            start -= 1
        end = found + 4
        while end < len(trimmed) and trimmed[end] in _HELM_SPACE:
            end += 1
        yield start, end
        position = end


def split_helm_manifest(text: str) -> list[tuple[int, str]]:
    """A rendered template cut into documents exactly as Helm cuts it, with their first lines.

    Helm trims the text, splits it at `HELM_SEPARATOR`, drops empty pieces and trims the rest.
    """
    start = len(text) - len(text.lstrip(GO_SPACE))
    trimmed = text.strip(GO_SPACE)
    pieces: list[tuple[int, str]] = []
    position = 0
    line = text.count("\n", 0, start) + 1
    for separator in [*helm_separators(trimmed), None]:
        end = separator[0] if separator is not None else len(trimmed)
        piece = trimmed[position:end]
        if piece:
            lead = len(piece) - len(piece.lstrip(GO_SPACE))
            pieces.append((line + piece.count("\n", 0, lead), piece.strip(GO_SPACE)))
        if separator is None:
            break
        line += trimmed.count("\n", position, separator[1])
        position = separator[1]
    return pieces


def parse_rendered_template(text: str, source: str) -> list[SourceDocument]:
    """The objects of one template Helm rendered, split the way Helm splits them.

    Each trimmed piece is read with one newline after it, as Helm writes it into the release
    manifest it installs from (`---\\n# Source: ...\\n<piece>\\n`): a block scalar at the end
    of a document keeps its final line break.
    """
    documents: list[SourceDocument] = []
    for first_line, piece in split_helm_manifest(text):
        documents.extend(parse_documents(piece + "\n", source, first_line=first_line))
    return documents


def parse_documents(
    text: str, source: str, *, first_line: int = 1, encoded: bytes | None = None
) -> list[SourceDocument]:
    """Every non-empty document of a multi-document YAML stream, in order.

    Raises `InvalidYaml` (with the line) for text that is not YAML, and for a document that is
    not a mapping. `first_line` is the line of `source` that `text` starts on; `encoded`, when
    given, is `text` in UTF-8.

    Text the fast reader can prove it reads right is read by it (`normalizer.fastyaml`), the
    rest by libyaml's nodes (`normalizer.kubeyaml`); both give the same documents.
    """
    fast = fast_documents(text, encoded)
    if fast is None:
        return parse_documents_by_libyaml(text, source, first_line=first_line)
    documents: list[SourceDocument] = []
    for line, manifest in fast:
        documents.extend(expand_list(SourceDocument(source, first_line + line - 1, manifest)))
    return documents


def parse_documents_by_libyaml(
    text: str, source: str, *, first_line: int = 1
) -> list[SourceDocument]:
    """`parse_documents` through libyaml's nodes only: the reader for any text."""
    documents: list[SourceDocument] = []
    for line, value in _load_all(text, source, first_line):
        if value is None:
            continue
        if not isinstance(value, dict):
            raise InvalidYaml(
                source,
                line,
                f"a document must be a mapping (a Kubernetes object), not a {_yaml_type(value)}",
            )
        documents.extend(expand_list(SourceDocument(source, line, value)))
    return documents


def parse_single_mapping(text: str, source: str) -> dict[str, Any]:
    """The one mapping a values file holds (`{}` for an empty file)."""
    loaded = list(_load_all(text, source))
    values = [(line, value) for line, value in loaded if value is not None]
    if not values:
        return {}
    if len(values) > 1:
        raise InvalidYaml(source, values[1][0], "expected one YAML document, found several")
    line, value = values[0]
    if not isinstance(value, dict):
        raise InvalidYaml(source, line, f"expected a mapping, not a {_yaml_type(value)}")
    mapping: dict[str, Any] = value
    return mapping


def load_yaml_values(text: str, source: str) -> list[Any]:
    """Every document of a YAML stream as Kubernetes reads it (None for an empty one).

    Raises `InvalidYaml` naming `source` and the line."""
    return [value for _, value in _load_all(text, source)]


def _load_all(text: str, source: str, first_line: int = 1) -> Iterator[tuple[int, Any]]:
    loader = KubernetesYamlLoader(text)
    loader.source = source
    loader.first_line = first_line
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
                line = first_line + (node.start_mark.line if node is not None else 0)
                value = JsonBuilder(loader).build(node) if node is not None else None
            except yaml.MarkedYAMLError as e:
                raise InvalidYaml(source, *_located_problem(e, first_line)) from e
            except yaml.YAMLError as e:
                raise InvalidYaml(source, None, str(e)) from e
            yield line, value
    finally:
        loader.dispose()


def _located_problem(error: yaml.MarkedYAMLError, first_line: int) -> tuple[int | None, str]:
    """The line of a YAML error and what is wrong, with where the construct began if elsewhere.

    e.g. (5, "did not find expected ',' or ']' (while parsing a flow sequence on line 4)").
    """
    mark = error.problem_mark or error.context_mark
    line = mark.line + first_line if mark is not None else None
    problem = error.problem or error.context or "unparseable"
    if error.context and error.problem:
        context_line = (
            error.context_mark.line + first_line if error.context_mark is not None else None
        )
        where = f" on line {context_line}" if context_line not in (None, line) else ""
        problem = f"{problem} ({error.context}{where})"
    return line, problem


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def expand_list(document: SourceDocument) -> list[SourceDocument]:
    manifest = document.manifest
    kind = manifest.get("kind")
    if kind == "List" and isinstance(manifest.get("items"), list):
        items: list[SourceDocument] = []
        for index, item in enumerate(manifest["items"]):
            if not isinstance(item, dict):
                raise InvalidYaml(
                    document.source,
                    document.line,
                    f"item {index} of a List must be a mapping, not a {_yaml_type(item)}",
                )
            items.append(SourceDocument(document.source, document.line, item))
        return items
    return [document]


def read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise SourceNotFound(f"{path} does not exist") from e
    except OSError as e:
        raise SourceNotFound(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidYaml(str(path), None, f"not UTF-8 text (byte {e.start})") from e


TASKSET_SPEC_FILE = "fleetbus.yaml"


def yaml_files(directory: Path) -> list[Path]:
    """The *.yaml and *.yml files under `directory`, recursively, sorted by relative path.

    Hidden files and directories (`.git`, `.github`) are left out, and so is the taskset spec
    (`fleetbus.yaml`) at the top: it is not an object to apply.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found.extend(
            Path(root, name)
            for name in files
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        )
    found = [path for path in found if path != directory / TASKSET_SPEC_FILE]
    return sorted(found, key=lambda path: path.relative_to(directory).as_posix())


def read_yaml_path(path: Path) -> list[SourceDocument]:
    """The documents of a YAML file, or of every YAML file under a directory."""
    if path.is_dir():
        documents: list[SourceDocument] = []
        for file in yaml_files(path):
            documents.extend(parse_documents(read_text(file), str(file)))
        return documents
    return parse_documents(read_text(path), str(path))
