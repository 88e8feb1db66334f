"""Structured logs of `fleetbus up`: one JSON object per line, with the fields code passes."""

from __future__ import annotations

import json
import logging

from fleetbus.jsonlog import JsonFormatter


def test_a_record_becomes_one_json_line_with_its_extra_fields() -> None:
    record = logging.LogRecord(
        "api.access", logging.INFO, __file__, 1, "GET %s %d", ("/x", 200), None
    )
    record.status = 200
    record.actor = "user:admin"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["msg"] == "GET /x 200"
    assert (entry["level"], entry["logger"]) == ("info", "api.access")
    assert (entry["status"], entry["actor"]) == (200, "user:admin")
    assert entry["ts"].endswith("+00:00")


def test_an_exception_is_kept_inside_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError as error:
        info = (ValueError, error, error.__traceback__)
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), info)
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert "ValueError: boom" in json.loads(line)["exc"]
