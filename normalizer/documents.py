"""YAML text to Kubernetes documents, each remembering where it came from.

Every source format ends up as YAML text (files, `kubectl kustomize` output, Helm's rendered
templates); this module is the one place it is parsed, so every format reports a bad document
the same way: file and line.

The parser reads YAML the way Kubernetes' own YAML-to-JSON conversion does, so the objects are
the ones the apiserver would see: timestamps stay strings (an annotation holding a date is a
string, not a datetime), `!!binary` stays its base64 text (which is what a Secret's `data`
wants), mapping keys become strings, and a `kind: List` expands into its items.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from normalizer.errors import InvalidYaml, SourceNotFound

YAML_SUFFIXES = (".yaml", ".yml")

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class KubernetesYamlLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """A safe loader with Kubernetes' scalar rules (see the module docstring)."""


def _construct_plain_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return str(value)


KubernetesYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_plain_string)
KubernetesYamlLoader.add_constructor("tag:yaml.org,2002:binary", _construct_plain_string)


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One parsed document and where it was read: a source name and the line it starts on."""

    source: str
    line: int
    manifest: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def parse_documents(text: str, source: str) -> list[SourceDocument]:
    """Every non-empty document of a multi-document YAML stream, in order.

    Raises `InvalidYaml` (with the line) for text that is not YAML, and for a document that is
    not a mapping.
    """
    documents: list[SourceDocument] = []
    for line, value in _load_all(text, source):
        if value is None:
            continue
        if not isinstance(value, dict):
            raise InvalidYaml(
                source,
                line,
                f"a document must be a mapping (a Kubernetes object), not a {_yaml_type(value)}",
            )
        manifest = _json_compatible(value, source, line)
        assert isinstance(manifest, dict)
        documents.extend(_expand_list(SourceDocument(source, line, manifest)))
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
    mapping = _json_compatible(value, source, line)
    assert isinstance(mapping, dict)
    return mapping


def _load_all(text: str, source: str) -> Iterator[tuple[int, Any]]:
    loader = KubernetesYamlLoader(text)
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
                line = node.start_mark.line + 1 if node is not None else 1
                value = loader.construct_document(node)
            except yaml.MarkedYAMLError as e:
                raise InvalidYaml(source, *_located_problem(e)) from e
            except yaml.YAMLError as e:
                raise InvalidYaml(source, None, str(e)) from e
            yield line, value
    finally:
        loader.dispose()


def _located_problem(error: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    """The line of a YAML error and what is wrong, with where the construct began if elsewhere.

    e.g. (5, "did not find expected ',' or ']' (while parsing a flow sequence on line 4)").
    """
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = error.problem or error.context or "unparseable"
    if error.context and error.problem:
        context_line = error.context_mark.line + 1 if error.context_mark is not None else None
        where = f" on line {context_line}" if context_line not in (None, line) else ""
        problem = f"{problem} ({error.context}{where})"
    return line, problem


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


MAX_DOCUMENT_VALUES = 1_000_000
"""More values than any Kubernetes object can hold (etcd keeps at most ~1.5 MB per object)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _json_compatible(value: Any, source: str, line: int) -> Any:
    """`value` as JSON-shaped data: string keys (like Kubernetes' YAML-to-JSON), no sets.

    YAML aliases are expanded here, so the expansion is counted: a few lines of nested aliases
    (a "billion laughs") would otherwise grow into billions of values and hang whoever reads
    them. Numbers must be what Kubernetes' JSON can carry: 64-bit integers, finite floats.
    """
    remaining = MAX_DOCUMENT_VALUES

    def convert(item: Any) -> Any:
        nonlocal remaining
        remaining -= 1
        if remaining < 0:
            raise InvalidYaml(
                source,
                line,
                f"the document expands to more than {MAX_DOCUMENT_VALUES:,} values "
                "(through YAML aliases?); no Kubernetes object is that large",
            )
        if isinstance(item, dict):
            return {_key_text(key): convert(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [convert(inner) for inner in item]
        if isinstance(item, set | frozenset | tuple | bytes):
            raise InvalidYaml(source, line, f"a {type(item).__name__} has no JSON form")
        if isinstance(item, int) and not isinstance(item, bool):
            if not INT64_MIN <= item <= INT64_MAX:
                raise InvalidYaml(
                    source,
                    line,
                    f"the integer {item} does not fit in 64 bits; quote it to keep it as a string",
                )
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidYaml(
                source, line, f"{item} is not a number JSON can carry; quote it to keep it as text"
            )
        return item

    return convert(value)


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _expand_list(document: SourceDocument) -> list[SourceDocument]:
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


def yaml_files(directory: Path) -> list[Path]:
    """The *.yaml and *.yml files under `directory`, recursively, sorted by relative path.

    Hidden files and directories (`.git`, `.github`) are left out.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found.extend(
            Path(root, name)
            for name in files
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        )
    return sorted(found, key=lambda path: path.relative_to(directory).as_posix())


def read_yaml_path(path: Path) -> list[SourceDocument]:
    """The documents of a YAML file, or of every YAML file under a directory."""
    if path.is_dir():
        documents: list[SourceDocument] = []
        for file in yaml_files(path):
            documents.extend(parse_documents(read_text(file), str(file)))
        return documents
    return parse_documents(read_text(path), str(path))
