"""Label selectors: the kubectl grammar, matching, and errors that point at the mistake."""

from __future__ import annotations

import pytest

from taskset.selectors import (
    InvalidLabel,
    InvalidSelector,
    check_labels,
    parse_selector,
    selector_matches,
)

PROD_EU = {"env": "prod", "region": "eu", "tier": "web"}
STAGING = {"env": "staging", "canary": "true"}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("env=prod", PROD_EU, True),
        ("env==prod", PROD_EU, True),
        ("env=prod", STAGING, False),
        ("env!=prod", STAGING, True),
        ("env!=prod", PROD_EU, False),
        ("region!=eu", STAGING, True),
        ("env in (prod,staging)", STAGING, True),
        ("env in (prod, dev)", STAGING, False),
        ("env notin (prod)", STAGING, True),
        ("env notin (prod)", PROD_EU, False),
        ("region notin (eu)", STAGING, True),
        ("canary", STAGING, True),
        ("canary", PROD_EU, False),
        ("!canary", PROD_EU, True),
        ("!canary", STAGING, False),
        ("env=prod,region=eu", PROD_EU, True),
        ("env=prod, region=us", PROD_EU, False),
        ("env=prod,!canary,tier in (web,api)", PROD_EU, True),
        ("example.com/team=core", {"example.com/team": "core"}, True),
        ("env=", {"env": ""}, True),
        ("env in (a,b)", {}, False),
    ],
)
def test_a_selector_matches_exactly_the_labels_kubectl_would(
    selector: str, labels: dict[str, str], expected: bool
) -> None:
    assert selector_matches(selector, labels) is expected


@pytest.mark.parametrize(
    ("selector", "position", "reason"),
    [
        ("", 1, "empty"),
        ("env=prod,", 10, "must follow ','"),
        ("env=prod region=eu", 10, "expected ','"),
        ("env in prod", 8, "expected '\\('"),
        ("env in (a,b", 12, "',' or '\\)'"),
        ("-env=prod", 1, "invalid label key"),
        ("env=pr od", 8, "expected ','"),
        ("env=-prod", 5, "invalid label value"),
        ("env>3", 4, "expected '='"),
        ("/x=1", 1, "prefix before '/' is empty"),
    ],
)
def test_a_bad_selector_is_refused_naming_the_position(
    selector: str, position: int, reason: str
) -> None:
    with pytest.raises(InvalidSelector, match=reason) as info:
        parse_selector(selector)
    assert info.value.position + 1 == position
    assert f"position {position}" in str(info.value)


def test_a_parsed_selector_prints_back_in_canonical_form() -> None:
    selector = parse_selector(" env == prod , tier in (web, api) ,!canary")
    assert str(selector) == "env=prod,tier in (api,web),!canary"
    assert parse_selector(str(selector)) == selector


def test_valid_labels_pass_and_invalid_ones_are_named() -> None:
    assert check_labels({"env": "prod", "example.com/team": "a.b_c"}) == {
        "env": "prod",
        "example.com/team": "a.b_c",
    }
    with pytest.raises(InvalidLabel, match="label key 'Bad Key'"):
        check_labels({"Bad Key": "x"})
    with pytest.raises(InvalidLabel, match="for label 'env'"):
        check_labels({"env": "x" * 64})
