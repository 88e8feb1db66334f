"""YAML text to documents: Kubernetes' scalar rules, and errors that name the file and line."""

from __future__ import annotations

import pytest

from normalizer.documents import parse_documents, parse_single_mapping
from normalizer.errors import InvalidYaml
from normalizer.values import merge_values


def test_documents_remember_their_source_and_starting_line() -> None:
    text = (
        "# a comment\napiVersion: v1\nkind: ConfigMap\n---\n\n---\napiVersion: v1\nkind: Secret\n"
    )
    documents = parse_documents(text, "bundle.yaml")
    assert [(d.where, d.manifest["kind"]) for d in documents] == [
        ("bundle.yaml:2", "ConfigMap"),
        ("bundle.yaml:7", "Secret"),
    ]


def test_invalid_yaml_names_the_file_and_the_line() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\n---\nmetadata:\n  name: [unclosed\n"
    with pytest.raises(InvalidYaml, match=r"^broken\.yaml:\d+: invalid YAML: ") as caught:
        parse_documents(text, "broken.yaml")
    assert caught.value.line is not None
    assert caught.value.line >= 5


def test_a_document_that_is_not_a_mapping_is_refused_with_its_line() -> None:
    with pytest.raises(InvalidYaml, match=r"list\.yaml:3: .*must be a mapping.*not a list"):
        parse_documents("a: 1\n---\n- just\n- a list\n", "list.yaml")


def test_timestamps_stay_text_and_binary_is_decoded_as_kubernetes_reads_them() -> None:
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"
        "  annotations:\n    built: 2026-01-02T03:04:05Z\n    day: 2026-01-02\n"
        "data:\n  key: !!binary aGVsbG8=\n"
    )
    manifest = parse_documents(text, "s.yaml")[0].manifest
    assert manifest["metadata"]["annotations"] == {
        "built": "2026-01-02T03:04:05Z",
        "day": "2026-01-02",
    }
    assert manifest["data"] == {"key": "hello"}


def test_mapping_keys_become_strings_like_yaml_to_json() -> None:
    manifest = parse_documents("data:\n  2: two\n  on: o\n  1e3: f\n", "k.yaml")[0]
    assert manifest.manifest["data"] == {"2": "two", "true": "o", "1000": "f"}


def test_a_null_mapping_key_is_refused_with_its_line() -> None:
    with pytest.raises(InvalidYaml, match=r"k\.yaml:3: .*mapping key is null"):
        parse_documents("data:\n  a: 1\n  ~: nothing\n", "k.yaml")


def test_a_list_kind_expands_into_its_items() -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n"
    )
    documents = parse_documents(text, "list.yaml")
    assert [d.manifest["metadata"]["name"] for d in documents] == ["a", "b"]


def test_a_values_file_is_one_mapping_and_empty_means_no_values() -> None:
    assert parse_single_mapping("", "empty.yaml") == {}
    assert parse_single_mapping("# nothing\n", "comments.yaml") == {}
    assert parse_single_mapping("a: {b: 1}\n", "v.yaml") == {"a": {"b": 1}}
    with pytest.raises(InvalidYaml, match=r"v\.yaml:1: .*expected a mapping"):
        parse_single_mapping("- 1\n", "v.yaml")
    with pytest.raises(InvalidYaml, match=r"v\.yaml:3: .*expected one YAML document"):
        parse_single_mapping("a: 1\n---\nb: 2\n", "v.yaml")


def test_values_layers_merge_deeply_and_later_layers_win() -> None:
    merged = merge_values(
        [
            {"image": {"repository": "nginx", "tag": "1.26"}, "ports": [80], "keep": 1},
            {"image": {"tag": "1.27"}, "ports": [8080], "drop": None},
        ]
    )
    assert merged == {
        "image": {"repository": "nginx", "tag": "1.27"},
        "ports": [8080],
        "keep": 1,
        "drop": None,
    }
