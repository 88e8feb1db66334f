from __future__ import annotations

import pytest

from taskset.errors import InvalidName
from taskset.names import check_name


@pytest.mark.parametrize("name", ["web", "a", "edge-1", "x" * 63, "0abc"])
def test_dns_labels_are_accepted(name: str) -> None:
    assert check_name("cluster", name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("Web", "lowercase"),
        ("a.b", "lowercase"),
        ("a*", "lowercase"),
        ("-a", "lowercase"),
        ("a-", "lowercase"),
        ("x" * 64, "64 characters"),
        ("a b", "lowercase"),
    ],
)
def test_names_that_would_break_subjects_or_kubernetes_are_refused(name: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason):
        check_name("cluster", name)
