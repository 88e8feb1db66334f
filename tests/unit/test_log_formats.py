"""The two log formats: JSON objects and text lines, both one record per line."""

from __future__ import annotations

import json
import logging
import sys

from fleetbus.jsonlog import JsonFormatter, TextFormatter


def record(msg: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("api.access", logging.WARNING, __file__, 1, msg, None, None)
    made.created = 1_796_634_000.5
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_text_lines_carry_the_fields_quoted_when_needed() -> None:
    line = TextFormatter().format(record("GET /x 503\nsecond line", status=503, who="a b"))
    assert line == (
        "2026-12-07T09:00:00.500+00:00 warning api.access: GET /x 503 second line "
        'status=503 who="a b"'
    )


def test_a_traceback_follows_the_text_line_indented() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    first, *rest = TextFormatter().format(failed).splitlines()
    assert first.endswith("api.access: failed")
    assert rest
    assert all(line.startswith("    ") for line in rest)


def test_json_lines_carry_the_same_record() -> None:
    entry = json.loads(JsonFormatter().format(record("hello", cluster="c1")))
    assert entry == {
        "ts": "2026-12-07T09:00:00.500+00:00",
        "level": "warning",
        "logger": "api.access",
        "msg": "hello",
        "cluster": "c1",
    }
