"""Generated values on re-render: kept when only randomness differs, refused when the text
around them changed, and never refused for characters renders share by chance."""

from __future__ import annotations

import random
from typing import Any

import pytest

from normalizer.determinism import (
    NONDETERMINISTIC_TEMPLATE,
    calls_a_generating_function,
    keep_previous,
    unstable_fields,
)
from normalizer.errors import RegenerationRefused
from taskset.model import ObjectRef


def secret(motd: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "auth", "namespace": "apps"},
        "stringData": {"motd": motd},
    }


def keep(previous: str, *renders: str) -> str:
    first, *others = [secret(render) for render in renders]
    unstable = unstable_fields([("secret.yaml:1", first)], [("secret.yaml:1", others[0])])
    before = secret(previous)
    kept = keep_previous(
        [first], [[other] for other in others], unstable, {ObjectRef.of(before): before}
    )
    motd: str = kept[0]["stringData"]["motd"]
    return motd


def test_a_value_that_differs_only_by_randomness_keeps_the_published_one() -> None:
    assert keep("hello Xq81", "hello aB3d", "hello Zz09") == "hello Xq81"


def test_new_text_around_a_generated_value_is_refused_naming_the_field() -> None:
    with pytest.raises(
        RegenerationRefused, match=r"secret.yaml:1: Secret/apps/auth: stringData.motd"
    ):
        keep("hello Xq81", "bye aB3d", "bye Zz09")


def test_two_renders_sharing_a_first_character_by_chance_are_refused_until_a_third_shows_it() -> (
    None
):
    # Both renders happen to start their generated part with "a": two renders cannot tell it
    # from text; a third render that does not share it can.
    with pytest.raises(RegenerationRefused):
        keep("hello Xq81", "hello aB3d", "hello a9Zk")
    assert keep("hello Xq81", "hello aB3d", "hello a9Zk", "hello 7cQe") == "hello Xq81"


@pytest.mark.parametrize(
    ("template", "calls"),
    [
        ("password: {{ randAlphaNum 16 | b64enc | quote }}", True),
        ("id: {{ uuidv4 }}", True),
        ('{{- $ca := genCA "x" 365 }}', True),
        ("at: {{ now | date }}", True),
        ("known: {{ .Values.known }}", False),
        ("{{ .Values.x }} randAlphaNum 16", False),
        ("{{ .Values.x } randAlphaNum", False),
        ("{{ randAlphaNumeric }}", False),
        ("{{ x_randAlpha }}", False),
        ("{{ (randAlpha 4) }}", True),
        ("{{ $\u00e9now }}", False),
    ],
)
def test_a_call_of_a_generating_function_is_found_only_inside_an_action(
    template: str, calls: bool
) -> None:
    assert calls_a_generating_function(template) is calls


def test_the_search_for_generating_calls_finds_what_its_regular_expression_finds() -> None:
    pieces = ["{{", "}}", "}", "{", " ", "x", "_", "\u00e9", "\n", ".", "(", "|", "9"]
    pieces += ["now", "rand", "randAlpha", "randAlphaNum", "gen", "genCA", "genCAWithKey"]
    pieces += ["uuidv4", "shuffle", "bcrypt"]
    chosen = random.Random(15)
    for _ in range(20000):
        template = "".join(chosen.choice(pieces) for _ in range(chosen.randint(0, 12)))
        expected = NONDETERMINISTIC_TEMPLATE.search(template) is not None
        assert calls_a_generating_function(template) is expected, template
