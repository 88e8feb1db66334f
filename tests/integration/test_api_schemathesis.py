"""Property-based fuzzing of the whole API from its own OpenAPI document: no input is a 500.

Schemathesis generates requests for every operation the document describes (valid ones and
ones that break the schema) and sends them, with an admin token, to the real app on uvicorn.
The hub is complete: the projector runs and clusters can be enrolled, so a 503 is a bug too.
The live stream is left out (a request to it never ends by design; its own tests cover it).
The number of examples per operation is bounded, and that bound is what is asserted: the run
takes about 20 s on an idle machine but nearly 5 minutes with both cores busy elsewhere, so its
duration is not. Its timeout is raised above the suite's default and only ends a run that hangs.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from access.nats_accounts import NatsAuthority
from access.pki import HubPki
from api.auth import Role
from events.store import EventStore
from fleetbus.enrollment import BundleEnrollment, LogStateHistory
from notify.service import Notifier
from notify.store import SubscriptionStore
from tests.integration.api_harness import live_api, projected
from tests.integration.test_api_events import append_each, override, published, registered

EXAMPLES_PER_OPERATION = 30


def fuzz(url: str, token: str) -> tuple[list[str], int, int]:
    """Failures (operation and what went wrong), the number of requests made and the number
    of operations fuzzed."""
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    failures: list[str] = []
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the document has an invalid operation: {result.err()}")
        else:
            operations.append(result.ok())
    calls = 0
    fuzzed = 0
    headers = {"Authorization": f"Bearer {token}"}
    for operation in operations:
        if operation.path.endswith("/events/stream"):
            continue
        fuzzed += 1

        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=url, headers=headers, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            check()
        except Exception as e:  # noqa: BLE001 - every failure of any operation is collected
            failures.append(f"{operation.method.upper()} {operation.path}: {e}")
    return failures, calls, fuzzed


@pytest.mark.timeout(900)
async def test_schemathesis_finds_no_server_error_in_any_operation(
    event_store: EventStore, tmp_path: Path
) -> None:
    await append_each(event_store, [registered("east"), published("web"), override("web", "east")])
    pki = HubPki(tmp_path / "pki")
    pki.ensure_ca(datetime.now(UTC))
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        api.hub.enrollment = BundleEnrollment(
            pki=pki,
            hub_urls=["tls://hub.example:443"],
            authority=NatsAuthority.open(tmp_path),
        )
        api.hub.history = LogStateHistory(api.hub.store)
        api.hub.notifications = Notifier(
            api.hub.store, api.hub.reports, SubscriptionStore(tmp_path / "notifications.json")
        )
        api.hub.snapshots = api.hub.history
        await projected(api)
        failures, calls, fuzzed = await asyncio.to_thread(fuzz, api.url, api.tokens[Role.admin])
    assert not failures, "\n\n".join(failures)
    assert calls >= 100, f"only {calls} requests were generated"
    assert calls <= EXAMPLES_PER_OPERATION * fuzzed, (
        f"{calls} requests for {fuzzed} operations: more than {EXAMPLES_PER_OPERATION} each"
    )
