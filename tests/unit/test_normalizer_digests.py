"""Digests depend on content only: key order, YAML layout and document order never change them."""

from __future__ import annotations

import random
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from normalizer import NormalizeOptions, normalize
from normalizer.kubeyaml import KubernetesYamlDumper
from taskset.digest import digest_of

OPTIONS = NormalizeOptions(name="bundle", namespace="apps")

_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\ufeff"
    ),
    max_size=12,
)
_scalars = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | _text
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_names = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_label_values = st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True)


@st.composite
def manifests(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    found: list[dict[str, Any]] = []
    for name in names:
        kind = draw(st.sampled_from(["ConfigMap", "Secret", "Service"]))
        found.append(
            {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {
                    "name": name,
                    "labels": draw(st.dictionaries(_names, _label_values, max_size=3)),
                },
                "data": draw(st.dictionaries(st.text(min_size=1, max_size=6), _values, max_size=4)),
            }
        )
    return found


def reordered(value: Any, rng: random.Random) -> Any:
    """The same data with every mapping's keys in a shuffled order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: reordered(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [reordered(item, rng) for item in value]
    return value


def as_yaml(documents: list[dict[str, Any]], *, flow: bool, indent: int, comments: bool) -> bytes:
    parts = []
    for document in documents:
        text = yaml.dump(
            document,
            Dumper=KubernetesYamlDumper,
            sort_keys=False,
            default_flow_style=flow,
            indent=indent,
            width=60,
        )
        parts.append(("# a comment\n\n" if comments else "") + text)
    separator = "---\n\n---\n" if comments else "---\n"
    return separator.join(parts).encode()


@settings(max_examples=40, deadline=None)
@given(manifests(), st.randoms(use_true_random=False), st.randoms(use_true_random=False))
def test_the_taskset_digest_ignores_key_order_layout_and_document_order(
    documents: list[dict[str, Any]], first: random.Random, second: random.Random
) -> None:
    one = as_yaml([reordered(d, first) for d in documents], flow=False, indent=2, comments=False)
    shuffled = list(documents)
    second.shuffle(shuffled)
    other = as_yaml([reordered(d, second) for d in shuffled], flow=True, indent=4, comments=True)
    a = normalize(one, OPTIONS).taskset
    b = normalize(other, OPTIONS).taskset
    assert digest_of(a) == digest_of(b)
    assert a.source is not None
    assert b.source is not None
    assert a.source.digest == b.source.digest


@settings(max_examples=40, deadline=None)
@given(manifests(), _text)
def test_any_changed_value_changes_the_digest(documents: list[dict[str, Any]], marker: str) -> None:
    original = normalize(as_yaml(documents, flow=False, indent=2, comments=False), OPTIONS)
    changed_documents = [dict(d) for d in documents]
    changed_documents[0] = {**documents[0], "data": {**documents[0]["data"], "\x01changed": marker}}
    changed = normalize(as_yaml(changed_documents, flow=False, indent=2, comments=False), OPTIONS)
    assert digest_of(original.taskset) != digest_of(changed.taskset)
    assert original.taskset.source is not None
    assert changed.taskset.source is not None
    assert original.taskset.source.digest != changed.taskset.source.digest


def test_the_same_input_always_gives_the_same_digest() -> None:
    text = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n"
    digests = {digest_of(normalize(text, OPTIONS).taskset) for _ in range(3)}
    assert len(digests) == 1
