"""The fast way to read YAML with Kubernetes' meaning, for the text it can prove it reads right.

Reading YAML through libyaml's Python nodes (`normalizer.kubeyaml`) costs about 65 ms per MB,
and a chart brings megabytes of it: kube-prometheus-stack's `crds/` alone are 4.5 MB, which is
more than Helm needs to load and render the whole chart. rapidyaml parses the same text and
writes it out as JSON in C++, and orjson reads that JSON, together about 12 ms per MB.

rapidyaml does not resolve scalars as go-yaml v2 does, so its JSON is only taken where the
answer cannot differ from the full reader's (`kubeyaml`); anything else is left to that reader
(`fast_documents` returns None), which also names the line of any problem:

- the text ends with a line feed (rapidyaml ends a block scalar on the last line with one,
  libyaml does not); it holds no tags, directives, `...` markers, `---` with text after it,
  carriage returns, tabs, line breaks other than line feeds, or characters YAML does not
  allow (libyaml refuses those; rapidyaml may not);
- every string must be one that go-yaml reads as that same string had it been written plain,
  or one that rapidyaml would not have written as a string had it been plain (its "1" and
  "true" were quoted): a string such as "yes", "0x1F", "~" or "*name" (an alias) may have
  been plain, and go-yaml would then read it differently. Keys always come out of rapidyaml
  as strings: a key must be named the same by sigs.k8s.io/yaml had it been plain ("1" is,
  "1.0" and "on" are not);
- numbers, `true`, `false` and `null` are what rapidyaml writes only for plain scalars in
  JSON's own spelling, which go-yaml reads the same way; floats get JSON's integral rule
  (`kubeyaml.json_number`);
- the JSON holds as many values as rapidyaml's tree has nodes: a repeated key (which the full
  reader refuses) would have been folded into one by the JSON reader;
- the documents are where the `---` lines say, so each one's first line is known.

rapidyaml reports a parse error on the C stream `stderr` before raising; the text then goes to
the full reader, which reports it properly, so that stream is pointed at /dev/null while
rapidyaml parses (Python's own `sys.stderr` writes to the file descriptor, not that stream).
`tests/unit/test_fastyaml.py` compares both readers on generated documents and the corpus.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import ryml

from normalizer.errors import InvalidYaml
from normalizer.kubeyaml import json_number, key_text, resolve_plain

_CONTENT = re.compile(r"^[ \t]*[^ \t\n#]", re.MULTILINE)
_BEFORE_A_TAG = frozenset("\n-:?,[{")
_REFUSED_BYTES = bytes((*range(0x00, 0x0A), *range(0x0B, 0x20), 0x7F))
_ALLOWED_BYTES = bytes(set(range(256)) - set(_REFUSED_BYTES))
_ASCII_BYTES = bytes(range(0x80))
_REFUSED_CHARACTERS = frozenset(
    (
        *map(chr, range(0x80, 0xA0)),  # C1 controls, NEL (a line break to libyaml) among them
        "\u2028",  # LINE SEPARATOR
        "\u2029",  # PARAGRAPH SEPARATOR
        "\ufeff",  # a byte order mark inside the text
        "\ufffe",
        "\uffff",
    )
)
_PLAIN_WORDS = frozenset(
    (
        *("y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"),
        *("n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"),
        *("~", "null", "Null", "NULL", "<<"),
    )
)
_NUMBER_START = frozenset("+-.0123456789")
_KEYS_RAPIDYAML_RENAMES = frozenset(("<<", ".inf", "-.inf", ".nan"))
"""`<<` is a merge; rapidyaml writes any key spelling infinity or NaN ("inf", "Infinity") as
one of the others."""
_SUSPECT_START = frozenset("+-.0123456789*")


_RAPIDYAML_ERRORS = (ryml.ExceptionParse, ryml.ExceptionVisit, ryml.ExceptionBasic)


class _NotProven(Exception):
    """The JSON may differ from what the full reader gives; that reader decides."""


def _ambiguous_key(text: str) -> bool:
    """Whether a key `text`, had it been written plain, would be named otherwise by
    sigs.k8s.io/yaml (keys always come out of rapidyaml as strings)."""
    if not text:
        return True
    first = text[0]
    if first == "*" or text in _KEYS_RAPIDYAML_RENAMES:
        return True
    if first not in _NUMBER_START and text not in _PLAIN_WORDS:
        return False
    try:
        return key_text(resolve_plain(text), 0, "") != text
    except InvalidYaml:
        return True


_VALUE_VERDICTS: dict[str, bool] = {}
VALUE_VERDICTS_KEPT = 4096


def _ambiguous_value(text: str) -> bool:
    """Whether a (non-empty) string value `text` may have been a plain scalar that go-yaml
    reads as something else.

    rapidyaml writes a plain `1`, `true` or `null` as a JSON number, boolean or null, so the
    string "1" was quoted; but it writes a plain `yes` or `0x1F` as a string, as it would a
    quoted one. Which of the two a text is, rapidyaml itself answers (once per text)."""
    first = text[0]
    if first == "*":
        return len(text) > 1
    if first not in _NUMBER_START and text not in _PLAIN_WORDS:
        return False
    read = resolve_plain(text)
    if type(read) is str and read == text:
        return False
    verdict = _VALUE_VERDICTS.get(text)
    if verdict is None:
        verdict = _plain_is_a_string_to_rapidyaml(text)
        if len(_VALUE_VERDICTS) >= VALUE_VERDICTS_KEPT:
            _VALUE_VERDICTS.clear()
        _VALUE_VERDICTS[text] = verdict
    return verdict


def _plain_is_a_string_to_rapidyaml(text: str) -> bool:
    try:
        with _quiet_c_stderr():
            tree = ryml.parse_in_arena(f"- {text}\n".encode())
        written = orjson.loads(ryml.emit_json(tree))
    except (orjson.JSONDecodeError, *_RAPIDYAML_ERRORS):
        return True
    return not (type(written) is list and len(written) == 1 and type(written[0]) is not str)


def _checked(value: Any) -> int:
    """Check (and fix floats in) one JSON container in place; the number of values in it.

    The cheap tests are written out here: this runs for every value of megabytes of YAML."""
    count = 0
    suspect, words = _SUSPECT_START, _PLAIN_WORDS
    if type(value) is dict:
        for key, item in value.items():
            if (not key or key[0] in suspect or key in words) and _ambiguous_key(key):
                raise _NotProven
            kind = type(item)
            if kind is str:
                if item and (item[0] in suspect or item in words) and _ambiguous_value(item):
                    raise _NotProven
            elif kind is dict or kind is list:
                count += _checked(item)
            elif kind is float:
                value[key] = _json_float(item)
        return count + len(value)
    for index, item in enumerate(value):
        kind = type(item)
        if kind is str:
            if item and (item[0] in suspect or item in words) and _ambiguous_value(item):
                raise _NotProven
        elif kind is dict or kind is list:
            count += _checked(item)
        elif kind is float:
            value[index] = _json_float(item)
    return count + len(value)


def _json_float(value: float) -> int | float:
    if value != value or value in (float("inf"), float("-inf")):
        raise _NotProven
    return json_number(value)


_C_STDERR_LOCK = threading.Lock()
_libc = ctypes.CDLL(None)
try:
    _C_STDERR: ctypes.c_void_p | None = ctypes.c_void_p.in_dll(_libc, "stderr")
except ValueError:  # a C library without the `stderr` symbol: rapidyaml's message stays
    _C_STDERR = None
_DEV_NULL: int | None = None


@contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    global _DEV_NULL
    if _C_STDERR is None:
        yield
        return
    with _C_STDERR_LOCK:
        if _DEV_NULL is None:
            _libc.fdopen.restype = ctypes.c_void_p
            _libc.fdopen.argtypes = (ctypes.c_int, ctypes.c_char_p)
            _DEV_NULL = _libc.fdopen(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), b"w")
        saved = _C_STDERR.value
        _C_STDERR.value = _DEV_NULL
        try:
            yield
        finally:
            _C_STDERR.value = saved


def _starts_a_line(text: str, character: str) -> bool:
    """Whether a line of `text` starts with `character`, a rare one: each of its places is
    looked at, not each line."""
    position = text.find(character)
    while position > 0:
        if text[position - 1] == "\n":
            return True
        position = text.find(character, position + 1)
    return position == 0


def _provable_text(text: str, data: bytes) -> bool:
    """Whether `text` (encoded as `data`) uses only what both readers read alike (see above).

    Searches for fixed strings, not a regular expression over every position: this runs over
    megabytes."""
    if not text.endswith("\n") or text.startswith(("%", "...")):
        return False
    if data.translate(None, _ALLOWED_BYTES):  # tabs and carriage returns among them
        return False
    if not data.isascii():
        # UTF-8 writes each character as an unbroken run of non-ASCII bytes: what is left
        # without the ASCII bytes is the text's other characters, in one short pass
        others = data.translate(None, _ASCII_BYTES).decode()
        if not _REFUSED_CHARACTERS.isdisjoint(others):
            return False
    if _starts_a_line(text, "%") or "\n..." in text:
        return False
    position = text.find("!")
    while position >= 0:  # a tag starts a node: at a line's start, or after an indicator
        before = position - 1
        while before >= 0 and text[before] == " ":
            before -= 1
        if before < 0 or text[before] in _BEFORE_A_TAG:
            return False
        position = text.find("!", position + 1)
    return True


def _document_markers(text: str) -> list[tuple[int, int]] | None:
    """The (start, end) of every `---` line, or None if one has text after the marker."""
    markers: list[tuple[int, int]] = []
    position = 0 if text.startswith("---") else text.find("\n---")
    while position >= 0:
        start = position if position == 0 and text.startswith("---") else position + 1
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if text[start + 3 : end].strip(" "):
            return None
        markers.append((start, end))
        position = text.find("\n---", end)
    return markers


def _parse(text: str, data: bytes) -> tuple[Any, bool, int]:
    with _quiet_c_stderr():
        try:
            tree = ryml.parse_in_arena(data)
        except _RAPIDYAML_ERRORS as e:
            raise _NotProven from e
    try:
        loaded = orjson.loads(_json_bytes(tree))
    except (orjson.JSONDecodeError, IndexError, *_RAPIDYAML_ERRORS) as e:
        raise _NotProven from e
    return loaded, bool(tree.is_stream(tree.root_id())), tree.size()


def _json_bytes(tree: Any) -> memoryview:
    """The tree as rapidyaml writes it in JSON, as bytes: `ryml.emit_json` makes a `str` of
    them first, which for megabytes of `crds/` costs more than measuring them."""
    return memoryview(ryml.emit_json_in_place(tree, bytearray(ryml.compute_json_length(tree))))


def json_text_of(data: bytes) -> str | None:
    """A YAML text as rapidyaml writes it in JSON, or None if rapidyaml cannot read it.

    Not Kubernetes' meaning of its scalars: for what only needs the strings (any YAML reader
    reads the same strings), e.g. looking for template text in a chart's values."""
    try:
        with _quiet_c_stderr():
            written = ryml.emit_json(ryml.parse_in_arena(data))
    except _RAPIDYAML_ERRORS:
        return None
    return written if isinstance(written, str) else bytes(written).decode("utf-8", "replace")


def _document_lines(text: str, markers: list[tuple[int, int]]) -> list[int | None]:
    """Where each document of `text` starts (None for an empty one), as libyaml counts them.

    The text before the first `---` is a document only if it holds something; every `---`
    starts one."""
    starts = [0] + [end for _, end in markers]
    ends = [start for start, _ in markers] + [len(text)]
    lines: list[int | None] = []
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        content = _CONTENT.search(text, start, end)
        if content is None:
            if index > 0:
                lines.append(None)
            continue
        lines.append(text.count("\n", 0, content.start()) + 1)
    return lines


def fast_documents(
    text: str, encoded: bytes | None = None
) -> list[tuple[int, dict[str, Any]]] | None:
    """The non-empty documents of `text` as (first line, mapping), read as `kubeyaml` reads
    them, or None when this reader cannot prove it (see the module docstring).

    `encoded` is `text` in UTF-8 when the caller has it (a file's bytes it decoded), so the
    megabytes of a chart's `crds/` are not encoded again. A document that is not a mapping
    is not proven either: the full reader names the error.
    """
    if encoded is not None:
        data = encoded
    else:
        try:
            data = text.encode()
        except UnicodeEncodeError:
            return None
    if not _provable_text(text, data):
        return None
    markers = _document_markers(text)
    if markers is None:
        return None
    lines = _document_lines(text, markers)
    try:
        loaded, stream, nodes = _parse(text, data)
        documents = loaded if stream else [loaded]
        if len(documents) != len(lines):
            return None
        counted = (1 if stream else 0) + len(documents)
        found: list[tuple[int, dict[str, Any]]] = []
        for line, document in zip(lines, documents, strict=True):
            if document is None:
                continue
            if type(document) is not dict or line is None:
                return None
            counted += _checked(document)
            found.append((line, document))
    except (_NotProven, RecursionError):
        return None
    if counted != nodes:
        return None
    return found
