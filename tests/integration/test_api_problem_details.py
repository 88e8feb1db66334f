"""Every refusal is an RFC 9457 problem naming the field, the rule and where the value sits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.auth import Role
from events.store import EventStore
from tests.integration.api_harness import live_api

CASES: list[Any] = [
    pytest.param(
        "POST",
        "/api/v1/clusters",
        {"name": 5},
        {
            "field": "name",
            "rule": "expected `str`, got `int`",
            "position": "$.name",
            "source": "body",
        },
        "body field 'name' at $.name: expected `str`, got `int`",
        id="wrong-type",
    ),
    pytest.param(
        "POST",
        "/api/v1/clusters",
        {"name": "x" * 100},
        {"field": "name", "rule": "expected `str` of length <= 63", "position": "$.name"},
        "body field 'name' at $.name: expected `str` of length <= 63",
        id="too-long",
    ),
    pytest.param(
        "POST",
        "/api/v1/clusters",
        {"nome": "x"},
        {"field": "(the whole body)", "rule": "object missing required field `name`"},
        "object missing required field `name`",
        id="missing-field",
    ),
    pytest.param(
        "GET",
        "/api/v1/events?from_seq=-5",
        None,
        {
            "field": "from_seq",
            "rule": "expected `int` >= 1",
            "position": "?from_seq",
            "value": "-5",
        },
        "query parameter 'from_seq': expected `int` >= 1 (got '-5')",
        id="negative-query-parameter",
    ),
    pytest.param(
        "GET",
        "/api/v1/events?limit=abc",
        None,
        {"field": "limit", "source": "query", "value": "abc"},
        "query parameter 'limit': expected `int`, got `str` (got 'abc')",
        id="query-parameter-not-a-number",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "problem", "sentence"), CASES)
async def test_a_validation_failure_is_a_problem_naming_field_rule_and_position(
    event_store: EventStore,
    tmp_path: Path,
    method: str,
    path: str,
    body: object,
    problem: dict[str, str],
    sentence: str,
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.admin) as client:
        response = await client.request(method, path, json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    answer = response.json()
    assert answer["type"] == "about:blank"
    assert answer["title"] == "Bad Request"
    assert answer["status"] == 400
    assert answer["instance"] == path.split("?")[0]
    assert sentence in answer["detail"], answer["detail"]
    assert answer["error"] == answer["detail"]
    assert "Validation failed" not in answer["detail"]
    (reported,) = answer["errors"]
    assert {key: reported.get(key) for key in problem} == problem
