"""The Kustomize reference allow-list, as a table: plain relative paths pass, nothing else."""

from __future__ import annotations

import pytest

from normalizer.kustomize_references import Target, reference_problem, references_of
from tests.security.kustomize_bypasses import BYPASSES

ACCEPTED = ["cm.yaml", "../base", "../base/", "./a/b", "a-b_c+d/e.yml", "v1.2/base", "..", "."]


@pytest.mark.parametrize("value", ACCEPTED)
def test_a_plain_relative_path_is_accepted(value: str) -> None:
    assert reference_problem(value) is None


@pytest.mark.parametrize("value", [*BYPASSES, "", "a b", "x" * 1025, "a\nb", "my.app/base"])
def test_anything_else_is_refused_with_a_reason(value: str) -> None:
    problem = reference_problem(value)
    assert problem is not None
    assert "\n" not in problem


def test_every_loading_field_is_read_with_its_position() -> None:
    kustomization = {
        "resources": ["a", "b"],
        "openapi": {"path": "schema.json"},
        "patches": [{"patch": "inline"}, {"path": "p.yaml"}],
        "configMapGenerator": [{"name": "g", "files": ["k=v.txt"], "env": "e.env"}],
        "transformers": ["t.yaml"],
        "namePrefix": "ignored-",
    }
    found = [(ref.field, ref.value, ref.target) for ref in references_of(kustomization)]
    assert found == [
        ("resources[0]", "a", Target.FILE_OR_DIRECTORY),
        ("resources[1]", "b", Target.FILE_OR_DIRECTORY),
        ("openapi.path", "schema.json", Target.FILE),
        ("patches[1].path", "p.yaml", Target.FILE),
        ("configMapGenerator[0].files[0]", "v.txt", Target.FILE),
        ("configMapGenerator[0].env", "e.env", Target.FILE),
        ("transformers[0]", "t.yaml", Target.PLUGIN_CONFIG),
    ]
