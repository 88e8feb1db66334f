"""`--nats-memory-limit`: Go's GOMEMLIMIT syntax, checked before anything starts."""

from __future__ import annotations

import argparse

import pytest

from fleetbus.options import memory_limit


@pytest.mark.parametrize(
    ("given", "passed_on"),
    [
        ("768MiB", "768MiB"),
        ("2GiB", "2GiB"),
        (" 1TiB ", "1TiB"),
        ("65536KiB", "65536KiB"),
        ("67108864", "67108864B"),
        ("67108864B", "67108864B"),
    ],
)
def test_sizes_in_go_syntax_are_passed_on(given: str, passed_on: str) -> None:
    assert memory_limit(given) == passed_on


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("768MB", "expected a size like 768MiB or 2GiB"),
        ("1.5GiB", "expected a size like 768MiB or 2GiB"),
        ("-1GiB", "expected a size like 768MiB or 2GiB"),
        ("off", "expected a size like 768MiB or 2GiB"),
        ("", "expected a size like 768MiB or 2GiB"),
        ("63MiB", "63MiB is below the smallest limit nats-server is given, 64MiB"),
        ("67108863", "67108863 is below the smallest limit"),
    ],
)
def test_anything_else_is_refused_with_the_value_named(given: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace(".", r"\.")) as error:
        memory_limit(given)
    assert repr(given) in str(error.value) or given.strip() in str(error.value)
