"""YAML with Kubernetes' meaning: go-yaml v2 scalars, duplicate keys, Helm's document split."""

from __future__ import annotations

from typing import Any

import pytest

from normalizer.documents import parse_documents, parse_rendered_template, split_helm_manifest
from normalizer.errors import InvalidYaml
from normalizer.kubeyaml import dump_yaml, resolve_plain


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12:30", "12:30"),
        ("190:20:30", "190:20:30"),
        ("=", "="),
        ("0o17", 15),
        ("017", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("08", 8.0),
        ("y", True),
        ("n", False),
        ("on", True),
        ("Off", False),
        ("tRUE", "tRUE"),
        ("~", None),
        ("2001-12-14", "2001-12-14"),
        ("1e400", "1e400"),
        ("9223372036854775808", 9223372036854775808),
        ("0x", "0x"),
    ],
)
def test_a_plain_scalar_means_what_go_yaml_v2_says(text: str, value: Any) -> None:
    resolved = resolve_plain(text)
    assert resolved == value
    assert type(resolved) is type(value)


def test_a_values_file_keeps_a_time_of_day_and_an_equals_sign_as_text() -> None:
    manifest = parse_documents("BACKUP_AT: 12:30\nop: =\nmode: 0o17\n", "values.yaml")[0]
    assert manifest.manifest == {"BACKUP_AT": "12:30", "op": "=", "mode": 15}


def test_a_duplicate_key_is_refused_naming_the_file_and_both_lines() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n"
    with pytest.raises(InvalidYaml, match=r"cm\.yaml:5: .*duplicate key 'name'.*first on line 4"):
        parse_documents(text, "cm.yaml")


def test_keys_that_go_yaml_reads_as_the_same_boolean_are_duplicates() -> None:
    with pytest.raises(InvalidYaml, match=r"duplicate key 'true'"):
        parse_documents("on: 1\nyes: 2\n", "k.yaml")


def test_a_key_repeating_a_merged_one_is_a_duplicate_like_go_yamls_strict_reading() -> None:
    with pytest.raises(InvalidYaml, match=r"k\.yaml:4: .*duplicate key 'k'"):
        parse_documents("base: &b {k: 1}\nchild:\n  <<: *b\n  k: 2\n", "k.yaml")


def test_float_values_with_integral_values_reach_json_as_integers() -> None:
    manifest = parse_documents("a: 1e3\nb: 1.5\nc: -0.0\n", "f.yaml")[0].manifest
    assert manifest == {"a": 1000, "b": 1.5, "c": 0}
    assert [type(value) for value in manifest.values()] == [int, float, int]


def test_helm_splits_at_a_separator_followed_by_a_comment_on_the_same_line() -> None:
    text = "# Source: a.yaml\nkind: A\n---# trimmed newline\nkind: B\n"
    assert split_helm_manifest(text) == [
        (1, "# Source: a.yaml\nkind: A"),
        (3, "# trimmed newline\nkind: B"),
    ]


def test_rendered_documents_keep_the_line_they_start_on_in_the_template() -> None:
    text = "\n\n---\napiVersion: v1\nkind: A\nmetadata: {name: a}\n---# c\n\nkind: B\nkind: C\n"
    with pytest.raises(InvalidYaml, match=r"t\.yaml:10: .*first on line 9"):
        parse_rendered_template(text, "t.yaml")
    documents = parse_rendered_template(text.replace("kind: C\n", ""), "t.yaml")
    assert [(document.line, document.manifest["kind"]) for document in documents] == [
        (4, "A"),
        (9, "B"),
    ]


@pytest.mark.parametrize("text", ["y", "n", "0o17", "1_000", "12:30", "08", "=", "<<", "", "on"])
def test_written_yaml_reads_back_as_the_same_string(text: str) -> None:
    written = dump_yaml({"value": text})
    assert parse_documents(written, "out.yaml")[0].manifest == {"value": text}


def test_an_integral_float_beyond_64_bits_stays_a_float_json_can_carry() -> None:
    manifest = parse_documents("a: 18446744073709551616\nb: 1.9e19\n", "big.yaml")[0].manifest
    assert manifest == {"a": float(2**64), "b": 1.9e19}
    assert all(type(value) is float for value in manifest.values())
