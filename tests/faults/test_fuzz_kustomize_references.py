"""Fuzzing the Kustomize reference allow-list: what it accepts can only be a local path.

`reference_problem` decides alone whether a string may reach kustomize as a reference, so its
accepted set is checked against what a fetch needs: nothing it accepts has a URL scheme or
host, an scp-like `user@host:`, a query, a fragment, a `//` subdirectory marker, an absolute
start, a home directory or a git repository name. `check_overlay` gets whole kustomizations
with those strings in random fields: it either passes, and then every reference in them is on
the allow-list, or it raises `RefusedReference`, never anything else.

Inputs are soups of the tokens that remote references are made of (schemes in any case, hosts,
`git@`, `//`, `?ref=`, `..`, percent escapes, control characters) and arbitrary text.
"""

from __future__ import annotations

import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import strategies as st

from normalizer.errors import RefusedReference
from normalizer.kustomize_references import check_overlay, reference_problem, references_of
from tests.faults.fuzzing import run_fuzz
from tests.faults.harness import LONG, record_figures

TOKENS = [
    "http",
    "HTTPS",
    "hTtP",
    "git",
    "Git",
    "ssh",
    "file",
    "s3",
    "::",
    ":",
    "/",
    "//",
    "@",
    ".",
    "..",
    "~",
    "github.com",
    "GitHub.COM",
    "gitlab.com",
    "127.0.0.1",
    "[::1]",
    "localhost",
    "org",
    "repo",
    ".git",
    "_git",
    "?ref=main",
    "#frag",
    "%2e",
    "%2F",
    "\\",
    "\n",
    "\t",
    " ",
    "\x00",
    "base",
    "cm.yaml",
    "-",
    "_",
    "+",
    "=",
]

references = st.lists(st.sampled_from(TOKENS) | st.text(max_size=4), min_size=1, max_size=12).map(
    "".join
)

FIELD_SHAPES: list[Callable[[str], dict[str, Any]]] = [
    lambda ref: {"resources": [ref]},
    lambda ref: {"bases": [ref]},
    lambda ref: {"components": [ref]},
    lambda ref: {"crds": [ref]},
    lambda ref: {"openapi": {"path": ref}},
    lambda ref: {"patches": [{"path": ref}]},
    lambda ref: {"patchesStrategicMerge": [ref]},
    lambda ref: {"replacements": [{"path": ref}]},
    lambda ref: {"configMapGenerator": [{"name": "g", "files": [ref], "envs": [ref]}]},
    lambda ref: {"secretGenerator": [{"name": "g", "env": ref}]},
    lambda ref: {"generators": [ref]},
    lambda ref: {"transformers": [f"kind: PatchTransformer\npath: {ref!r}\n"]},
]

kustomizations = st.lists(
    st.tuples(st.sampled_from(range(len(FIELD_SHAPES))), references), min_size=1, max_size=4
).map(lambda placed: _merge([FIELD_SHAPES[index](ref) for index, ref in placed]))


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


def only_local_paths_are_accepted(value: str) -> None:
    problem = reference_problem(value)
    if problem is not None:
        assert problem.strip()
        assert "\n" not in problem
        return
    split = urllib.parse.urlsplit(value)
    assert (split.scheme, split.netloc, split.query, split.fragment) == ("", "", "", ""), value
    assert not any(ch in value for ch in ":@?#%\\~ \n\t\x00"), value
    assert not value.startswith("/"), value
    assert "//" not in value, value
    assert not any(part.lower().endswith(".git") for part in value.split("/")), value


def overlays_pass_only_with_local_references(document: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp) / "overlay"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(document))
        refusal: RefusedReference | None = None
        try:
            check_overlay(overlay, inside=Path(tmp))
        except RefusedReference as refused:
            refusal = refused
    if refusal is not None:
        assert str(refusal).startswith("overlay/kustomization.yaml: ")
        return
    for reference in references_of(document):
        if "\n" not in reference.value:
            assert reference_problem(reference.value) is None, reference


@pytest.mark.parametrize(
    ("fuzz_seed", "cases"),
    [
        pytest.param(2026, 1500, id="seed=2026-cases=1500"),
        pytest.param(77, 100_000, id="seed=77-cases=100000", marks=LONG),
    ],
)
def test_the_reference_allow_list_accepts_nothing_that_names_a_remote_location(
    fuzz_seed: int, cases: int
) -> None:
    ran = run_fuzz(references, only_local_paths_are_accepted, cases=cases, fuzz_seed=fuzz_seed)
    assert ran >= cases
    record_figures("fuzz kustomize references", seed=fuzz_seed, cases=ran, crashes=0)


@pytest.mark.parametrize(
    ("fuzz_seed", "cases"),
    [
        pytest.param(4242, 200, id="seed=4242-cases=200"),
        pytest.param(9, 10_000, id="seed=9-cases=10000", marks=LONG),
    ],
)
def test_an_overlay_passes_the_check_only_when_every_reference_is_a_local_path(
    fuzz_seed: int, cases: int
) -> None:
    ran = run_fuzz(
        kustomizations, overlays_pass_only_with_local_references, cases=cases, fuzz_seed=fuzz_seed
    )
    assert ran >= cases
    record_figures("fuzz kustomize overlays", seed=fuzz_seed, cases=ran, crashes=0)
