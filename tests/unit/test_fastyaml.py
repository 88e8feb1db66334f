"""The fast YAML reader gives what the full reader gives, or leaves the text to it; Helm's
separators found without the regular expression are where it finds them.

A differential test over generated documents built from the scalars that differ between YAML
readers, written plain, quoted and as block scalars, as keys and values, in several documents
with comments; and the cases the fast reader must leave to the full one, each named.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normalizer import fastyaml
from normalizer.documents import (
    HELM_SEPARATOR,
    helm_separators,
    parse_documents,
    parse_documents_by_libyaml,
)
from normalizer.errors import InvalidYaml
from normalizer.fastyaml import fast_documents

TRICKY = [
    *("y", "Y", "yes", "Yes", "no", "NO", "on", "Off", "true", "True", "TRUE", "tRUE"),
    *("false", "FALSE", "null", "Null", "NULL", "~", "=", "-", ".", "+", "_", "<<x"),
    *(".inf", ".Inf", "-.inf", "+.inf", ".nan", "inf", "nan", "infinity", "-Infinity"),
    *("0", "-0", "+0", "00", "007", "08", "09.5", "0o17", "0O17", "0x1F", "0X1f", "0b101"),
    *("-0b101", "+0x1F", "0x", "1_000", "1__0", "_1", "1_", "12:30", "190:20:30", "1:2:3.5"),
    *("1", "-1", "+1", "1.", "-1.", ".5", "-.5", "+.5", "5.e3", ".5e3", "1e3", "1E+3", "1e-3"),
    *("1.5", "-1.5", "1.0", "3.14159", "1e400", "-1e400", "4.9e-324", "1e21", "1e20"),
    *("9007199254740993", "9223372036854775807", "9223372036854775808"),
    *("18446744073709551615", "18446744073709551616", "-9223372036854775808"),
    *("-9223372036854775809", "2001-12-14", "2001-12-14T21:59:43.10-05:00", "*", "*/*"),
    *("*.example.com", "a b", "hello", "é", "x: y", "#no", "a#b", "", " lead", "trail "),
]
SAFE_PLAIN_TEXT = st.sampled_from(["a", "name", "value", "b-c", "x.y", "port", "app"])


def _quoted(text: str, style: str) -> str:
    if style == "double":
        return json.dumps(text, ensure_ascii=False)
    if style == "escaped":
        return json.dumps(text).replace("a", "\\x61").replace(" ", "\\u0020")
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    return text


def _plain_is_possible(text: str) -> bool:
    return bool(text) and text == text.strip() and not text.startswith(("#", "*", "-", "?"))


ORDINARY = st.sampled_from(["a", "web", "nginx:1.27", "8080", "1.5", "true", "x y z", "é"])


@st.composite
def scalar(draw: st.DrawFn, ordinary: bool = False) -> str:
    tricky = not ordinary or draw(st.integers(0, 9)) == 0
    text = draw(st.sampled_from(TRICKY) | SAFE_PLAIN_TEXT if tricky else ORDINARY)
    styles = ["double", "escaped", "single"] + (["plain"] * 3 if _plain_is_possible(text) else [])
    if ": " in text or text.endswith(":") or " #" in text:
        styles = ["double", "escaped", "single"]
    return _quoted(text, draw(st.sampled_from(styles)))


def _indent(block: str, spaces: int) -> str:
    return "".join(" " * spaces + line if line else line for line in block.splitlines(True))


@st.composite
def mapping(draw: st.DrawFn, depth: int = 0, ordinary: bool = False) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        key = draw(scalar(ordinary) | SAFE_PLAIN_TEXT)
        kind = draw(st.sampled_from(["scalar", "scalar", "block", "list", "map", "flow", "empty"]))
        if kind == "map" and depth < 2:
            lines.append(f"{key}:\n" + _indent(draw(mapping(depth + 1, ordinary)), 2))
        elif kind == "list" and depth < 2:
            items = draw(st.lists(scalar(ordinary), min_size=1, max_size=3))
            lines.append(f"{key}:\n" + "".join(f"- {item}\n" for item in items))
        elif kind == "flow":
            items = draw(st.lists(scalar(ordinary), min_size=0, max_size=3))
            lines.append(f"{key}: [{', '.join(items)}]\n")
        elif kind == "block":
            body = draw(st.sampled_from(TRICKY)) or "x"
            indicator = draw(st.sampled_from(["|", "|-", "|+", ">", ">-"]))
            lines.append(f"{key}: {indicator}\n  {body}\n  second {body}\n")
        elif kind == "empty":
            lines.append(f"{key}:\n")
        else:
            lines.append(f"{key}: {draw(scalar(ordinary))}\n")
        if draw(st.booleans()):
            lines.append("# a comment\n")
    return "".join(lines)


@st.composite
def stream(draw: st.DrawFn, ordinary: bool = False) -> str:
    """Documents full of tricky scalars, or (`ordinary`) with one scalar in ten tricky."""
    documents = draw(st.lists(mapping(ordinary=ordinary), min_size=1, max_size=3))
    lead = draw(st.sampled_from(["", "# Source: chart/templates/x.yaml\n", "---\n", "\n"]))
    text = lead + "---\n".join(documents)
    return text.rstrip("\n") if draw(st.integers(0, 5)) == 0 else text


def _by_libyaml(text: str) -> list[tuple[int, dict[str, Any]]] | InvalidYaml:
    try:
        return [(d.line, d.manifest) for d in parse_documents_by_libyaml(text, "t.yaml")]
    except InvalidYaml as e:
        return e


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream() | stream(ordinary=True))
def test_the_fast_reader_reads_generated_documents_as_libyaml_with_go_yaml_meaning_does(
    text: str,
) -> None:
    fast = fast_documents(text)
    expected = _by_libyaml(text)
    if fast is not None:
        assert not isinstance(expected, InvalidYaml), (text, expected)
        assert fast == expected, text
    got: list[tuple[int, dict[str, Any]]] | InvalidYaml
    try:
        got = [(d.line, d.manifest) for d in parse_documents(text, "t.yaml")]
    except InvalidYaml as e:
        got = e
    assert str(got) == str(expected) if isinstance(expected, InvalidYaml) else got == expected


def test_most_generated_ordinary_documents_take_the_fast_path() -> None:
    taken: list[bool] = []

    @settings(max_examples=200, deadline=None, database=None, derandomize=True)
    @given(stream(ordinary=True))
    def read(text: str) -> None:
        taken.append(fast_documents(text) is not None)

    read()
    assert sum(taken) >= len(taken) // 10, f"{sum(taken)} of {len(taken)}"


MANIFEST = """# Source: chart/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, "version": "1"}
  annotations:
    prometheus.io/scrape: "true"
    checksum/config: "0123abc"
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: web
          image: "nginx:1.27"
          args: ["--port", "8080", '--ratio=0.5']
          ports:
            - containerPort: 8080
          resources: {limits: {cpu: 1.5, memory: 1e3}}
          command:
            - sh
            - -c
            - |
              echo "started"
              exec nginx
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
data:
  empty: ""
  nothing:
"""


def test_an_ordinary_manifest_is_read_by_the_fast_reader_with_kubernetes_meaning() -> None:
    fast = fast_documents(MANIFEST)
    assert fast is not None
    assert fast == _by_libyaml(MANIFEST)
    (line, deployment), (second_line, config_map) = fast
    assert (line, second_line) == (2, 28)
    assert deployment["metadata"]["labels"] == {"app": "web", "version": "1"}
    assert deployment["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": 1.5, "memory": 1000}}
    assert type(resources["limits"]["memory"]) is int
    assert config_map["data"] == {"empty": "", "nothing": None}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a: yes\n", "a plain boolean go-yaml reads and rapidyaml does not"),
        ("a: 0x1F\n", "a hexadecimal integer"),
        ("a: 1_000\n", "an integer with underscores"),
        ("a: ~\n", "a tilde null"),
        ("a: +1\n", "a signed integer"),
        ("on: 1\n", "a key go-yaml names 'true'"),
        ("1.0: x\n", "a float key go-yaml names '1'"),
        ("a: !!str 123\n", "a tag"),
        ("a:\n  !!str 123\n", "a tag at the start of a line"),
        ("a: [x, !!str 1]\n", "a tag in a flow sequence"),
        ("base: &b {k: 1}\nchild: *b\n", "an alias"),
        ("base: &b {k: 1}\nchild:\n  <<: *b\n", "a merge key"),
        ("a: 1\na: 2\n", "a repeated key"),
        ("a:\tb\n", "a tab"),
        ("a: b\r\n", "a carriage return"),
        ("--- a: 1\n", "text after the document marker"),
        ("%YAML 1.1\n---\na: 1\n", "a directive"),
        ("a: 1\n...\n", "a document end marker"),
        ("a: x\x85y\n", "a NEL line break"),
        ("a: x\u2028y\n", "a line separator"),
        ("a: x\u2029y\n", "a paragraph separator"),
        ("a: x\ufeffy\n", "a byte order mark inside the text"),
        ("a: x\ufffey\n", "a noncharacter"),
        ("a: \u00e9x\x9by\n", "a C1 control character after another non-ASCII one"),
        ("a: 1\n%YAML 1.1\n---\nb: 2\n", "a directive after a document"),
        ("a: \x01\n", "a control character"),
        ("a: [1, 2\n", "text that is not YAML"),
        ("- a\n- b\n", "a document that is not a mapping"),
        ("a: |\n  x", "a block scalar on the last line, without a line feed"),
        ("? [a]\n: 1\n", "a key that is a list"),
    ],
)
def test_what_the_fast_reader_cannot_prove_is_left_to_libyaml(text: str, why: str) -> None:
    assert fast_documents(text) is None, why
    expected = _by_libyaml(text)
    if isinstance(expected, InvalidYaml):
        with pytest.raises(InvalidYaml) as raised:
            parse_documents(text, "t.yaml")
        assert str(raised.value) == str(expected)
    else:
        assert [(d.line, d.manifest) for d in parse_documents(text, "t.yaml")] == expected


def test_percent_signs_and_other_characters_inside_scalars_stay_on_the_fast_path() -> None:
    text = "a: 50%\nb: caf\u00e9 \u2014 \u65e5\u672c\nc: x...y\n"
    assert fast_documents(text) == [
        (1, {"a": "50%", "b": "caf\u00e9 \u2014 \u65e5\u672c", "c": "x...y"})
    ]


def test_an_exclamation_mark_inside_a_scalar_is_no_tag() -> None:
    text = 'expr: up{job!="a"} != 1\nnote: "hello!"\n'
    assert fast_documents(text) == [(1, {"expr": 'up{job!="a"} != 1', "note": "hello!"})]


def test_quoted_numbers_and_booleans_stay_strings_on_the_fast_path() -> None:
    text = 'a: "1"\nb: "true"\nc: \'0x1F\'\nd: "yes"\n"1": one\n"true": t\n'
    assert fast_documents(text) is None  # "yes" and "0x1F" may have been plain to rapidyaml
    text = 'a: "1"\nb: "true"\nc: "-5"\nd: "0.99"\n"1": one\n"true": t\n'
    fast = fast_documents(text)
    assert fast == [(1, {"a": "1", "b": "true", "c": "-5", "d": "0.99", "1": "one", "true": "t"})]


def test_a_broken_document_leaves_no_message_of_rapidyaml_on_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(InvalidYaml, match=r"broken\.yaml:2"):
        parse_documents("a: [1, 2\nb: c\n", "broken.yaml")
    assert capfd.readouterr().err == ""
    libc = ctypes.CDLL(None)
    libc.fputs.argtypes = (ctypes.c_char_p, ctypes.c_void_p)
    libc.fflush.argtypes = (ctypes.c_void_p,)
    c_stderr = ctypes.c_void_p.in_dll(libc, "stderr").value
    libc.fputs(b"the C stderr stream works again\n", c_stderr)
    libc.fflush(c_stderr)
    assert capfd.readouterr().err == "the C stderr stream works again\n"


def test_document_lines_count_comments_markers_and_empty_documents() -> None:
    text = "# lead\n\n---\n# only a comment\n---\n\n  # indented comment\nkind: A\n---\nkind: B\n"
    assert fast_documents(text) == [(8, {"kind": "A"}), (10, {"kind": "B"})]
    assert fast_documents(text) == _by_libyaml(text)


def test_verdicts_on_plain_texts_are_kept_for_a_bounded_number_of_texts() -> None:
    fastyaml._VALUE_VERDICTS.clear()
    for number in range(fastyaml.VALUE_VERDICTS_KEPT + 10):
        assert fast_documents(f'a: "0x{number:x}"\n') is None
    assert len(fastyaml._VALUE_VERDICTS) <= fastyaml.VALUE_VERDICTS_KEPT


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["---", "\n", " ", "\t", "\r", "\f", "\v", "a", "#", "-"])))
def test_helms_separators_are_found_where_its_regular_expression_finds_them(
    parts: list[str],
) -> None:
    text = "".join(parts)
    expected = [(match.start(), match.end()) for match in HELM_SEPARATOR.finditer(text)]
    assert list(helm_separators(text)) == expected
