"""What the Kubernetes executor retries: the apiserver's passing answers, and nothing else.

A scripted stand-in for the executor's apiserver client (`ApiClient`) answers list, watch and
apply with exactly the sequence a starting or restarting apiserver gives (429 while a new CRD's
storage initializes, 503, a 404 for a kind not served yet, a reset connection, 410 for an
expired resourceVersion).
The real-apiserver counterpart is `tests/integration/test_edge_kube_startup.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import httpx2 as httpx
import pytest

from edge_connector import kube_executor
from edge_connector.errors import ApplyFailed, ConnectorError
from edge_connector.executor import DriftObserved
from edge_connector.kube_executor import (
    KubernetesExecutor,
    StepResource,
    is_kind_not_served,
    is_transient,
)

REQUEST = httpx.Request("GET", "https://apiserver.test/apis/fleetbus.io/v1alpha1/steps")


def api_error(
    code: int, message: str, details: dict[str, Any] | None = None
) -> httpx.HTTPStatusError:
    """An answer with the apiserver's JSON Status, as `ApiClient` raises it."""
    body = {"kind": "Status", "code": code, "message": message, "details": details or {}}
    response = httpx.Response(code, json=body, request=REQUEST)
    return httpx.HTTPStatusError(f"{code}", request=REQUEST, response=response)


def page_not_found() -> httpx.HTTPStatusError:
    """What the apiserver answers for a resource type it does not serve: plain text."""
    response = httpx.Response(404, text="404 page not found", request=REQUEST)
    return httpx.HTTPStatusError("404 Not Found", request=REQUEST, response=response)


def drifted_step(name: str, detected: int) -> dict[str, Any]:
    return {
        "apiVersion": "fleetbus.io/v1alpha1",
        "kind": "Step",
        "metadata": {"name": name, "uid": f"uid-{name}", "annotations": {}},
        "spec": {
            "task": "shop",
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}},
        },
        "status": {"drift": {"detected": detected, "fields": ["/data/k"]}},
    }


class Listing:
    def __init__(self, items: list[dict[str, Any]], version: str) -> None:
        self.items = items
        self.resourceVersion = version

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for item in self.items:
            yield item


class FailingListing(Listing):
    def __init__(self, error: BaseException) -> None:
        super().__init__([], "")
        self.error = error

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        raise self.error
        yield {}  # pragma: no cover - makes this an async generator


WatchAnswer = list[dict[str, Any]] | BaseException


class ScriptedClient:
    """Answers each call with the next scripted answer; an exception is raised."""

    def __init__(
        self,
        lists: list[Listing],
        watches: list[WatchAnswer],
        applies: list[BaseException | None] | None = None,
    ) -> None:
        self.lists: Iterator[Listing] = iter(lists)
        self.watches = iter(watches)
        self.applies = iter(applies or [])
        self.watched_from: list[str | None] = []
        self.patched: list[str] = []
        self.applied = 0

    def list(self, *_: Any, **__: Any) -> Listing:
        return next(self.lists)

    def watch(self, *_: Any, resource_version: str | None = None, **__: Any) -> Any:
        self.watched_from.append(resource_version)
        return self._watch(next(self.watches, None))

    async def _watch(self, answer: WatchAnswer | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        if answer is None:
            await asyncio.Event().wait()  # the script is done: an idle watch
            return
        if isinstance(answer, BaseException):
            raise answer
        for item in answer:
            yield "MODIFIED", item
        await asyncio.Event().wait()  # then nothing more happens

    async def patch(self, _: Any, name: str, *__: Any, **___: Any) -> None:
        self.patched.append(name)

    async def apply(self, obj: Any, **_: Any) -> Any:
        self.applied += 1
        answer = next(self.applies, None)
        if answer is not None:
            raise answer
        return obj

    async def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def no_real_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_executor, "FIRST_BACKOFF", 0.001)
    monkeypatch.setattr(kube_executor, "MAX_BACKOFF", 0.01)


def executor_on(client: ScriptedClient) -> KubernetesExecutor:
    return KubernetesExecutor(client, cluster="edge-1", namespace="fleet")  # type: ignore[arg-type]


async def first_observations(executor: KubernetesExecutor, count: int) -> list[DriftObserved]:
    seen: list[DriftObserved] = []
    async with asyncio.timeout(10), aclosing(executor.drift()) as observations:
        async for observed in observations:
            seen.append(observed)
            if len(seen) == count:
                break
    return seen


async def test_the_step_watch_waits_out_what_a_starting_apiserver_answers() -> None:
    client = ScriptedClient(
        lists=[
            FailingListing(page_not_found()),
            FailingListing(api_error(404, "the server could not find the requested resource")),
            FailingListing(api_error(429, "storage is (re)initializing")),
            FailingListing(api_error(503, "service unavailable")),
            FailingListing(httpx.ConnectError("connection refused", request=REQUEST)),
            Listing([drifted_step("a", 1)], "10"),
            Listing([], "20"),
            Listing([], "30"),
        ],
        watches=[
            httpx.ReadError("connection reset by peer", request=REQUEST),
            api_error(410, "too old resource version: 20 (25)"),
            [drifted_step("b", 2)],
        ],
    )

    seen = await first_observations(executor_on(client), 2)

    assert [o.object for o in seen] == ["ConfigMap/a", "ConfigMap/b"]
    assert client.watched_from == ["10", "20", "30"]
    assert client.patched == ["a", "b"]


async def test_a_refusal_ends_the_step_watch_with_an_error_that_says_so() -> None:
    client = ScriptedClient(
        lists=[FailingListing(api_error(403, 'steps.fleetbus.io is forbidden: User "edge"'))],
        watches=[],
    )

    with pytest.raises(
        ConnectorError, match=r"watching Steps failed: steps\.fleetbus\.io is forbid"
    ):
        await first_observations(executor_on(client), 1)


async def test_a_write_answered_429_is_tried_again_and_succeeds() -> None:
    busy = api_error(429, "storage is (re)initializing")
    client = ScriptedClient(lists=[], watches=[], applies=[busy, busy])
    step = drifted_step("a", 0)

    stored = await executor_on(client)._apply(StepResource, step, phase="install", obj="a")

    assert stored["metadata"]["name"] == "a"
    assert client.applied == 3


async def test_a_write_the_apiserver_refuses_is_not_tried_again() -> None:
    refused = api_error(422, 'Step.fleetbus.io "a" is invalid: spec.phase: Unsupported value')
    client = ScriptedClient(lists=[], watches=[], applies=[refused])

    with pytest.raises(ApplyFailed, match=r"spec\.phase: Unsupported value"):
        await executor_on(client)._apply(
            StepResource, drifted_step("a", 0), phase="install", obj="a"
        )

    assert client.applied == 1


async def test_a_write_that_stays_unavailable_fails_after_a_bounded_number_of_attempts() -> None:
    down = api_error(503, "etcdserver: leader changed")
    client = ScriptedClient(lists=[], watches=[], applies=[down] * 20)

    with pytest.raises(ApplyFailed, match="apiserver answered 503"):
        await executor_on(client)._apply(
            StepResource, drifted_step("a", 0), phase="install", obj="a"
        )

    assert client.applied == kube_executor.APPLY_ATTEMPTS


def test_only_429_5xx_and_broken_connections_are_transient() -> None:
    assert is_transient(api_error(429, "storage is (re)initializing"))
    assert is_transient(api_error(500, "internal error"))
    assert is_transient(api_error(504, "timeout"))
    assert is_transient(httpx.RemoteProtocolError("peer closed connection", request=REQUEST))
    assert not is_transient(api_error(409, "conflict"))
    assert not is_transient(api_error(410, "expired"))
    assert not is_transient(api_error(403, "forbidden"))
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(page_not_found())


def test_a_404_is_a_kind_not_served_unless_it_names_an_object() -> None:
    assert is_kind_not_served(page_not_found())
    assert is_kind_not_served(api_error(404, "the server could not find the requested resource"))
    missing_namespace = api_error(404, 'namespaces "x" not found', {"name": "x", "kind": "ns"})
    assert not is_kind_not_served(missing_namespace)
