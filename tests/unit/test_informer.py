"""The informer's own list-then-watch loop, against a scripted apiserver.

Scenarios: resume from the last version after a normal close, including a BOOKMARK's version;
re-list after 410 Gone with deletions missed in the gap delivered as DELETED; resume (not
re-list) after a dropped connection; stop with the error on anything else.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster_controller.errors import Forbidden, KubeUnavailable, ResourceVersionExpired
from cluster_controller.informer import Informer
from cluster_controller.kube import ObjectList, WatchEvent
from kube_contract.resources import ResourceInfo

CONFIGMAP = ResourceInfo(
    group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True
)


class EndOfScript(Exception):
    """Raised by the fake apiserver when the scenario has nothing more to say."""


def cm(name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
    }


class ScriptedApiserver:
    """Answers lists and watches from scripts; records what it was asked."""

    def __init__(self, lists: list[ObjectList], watches: list[list[WatchEvent] | Exception]):
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []
        self.list_calls = 0

    async def list(
        self,
        info: ResourceInfo,
        *,
        namespace: str = "",
        label_selector: str = "",
        limit: int = 500,
    ) -> ObjectList:
        self.list_calls += 1
        if not self.lists:
            raise EndOfScript
        return self.lists.pop(0)

    async def watch(
        self,
        info: ResourceInfo,
        *,
        resource_version: str,
        namespace: str = "",
        label_selector: str = "",
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        self.watched_from.append(resource_version)
        if not self.watches:
            raise EndOfScript
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        for event in step:
            yield event


def informer(api: ScriptedApiserver, seen: list[tuple[str, str]]) -> Informer:
    def record(event_type: str, obj: dict[str, Any]) -> None:
        seen.append((event_type, obj["metadata"]["name"]))

    return Informer(api, CONFIGMAP, on_event=record, backoff_base=0.0)


async def test_a_closed_watch_resumes_from_the_last_version_bookmarks_included() -> None:
    api = ScriptedApiserver(
        lists=[ObjectList(items=[cm("a", "1")], resource_version="10")],
        watches=[
            [
                WatchEvent(type="MODIFIED", object=cm("a", "11")),
                WatchEvent(type="BOOKMARK", object=cm("", "15")),
            ],
            [WatchEvent(type="ADDED", object=cm("b", "16"))],
        ],
    )
    seen: list[tuple[str, str]] = []
    watcher = informer(api, seen)

    with pytest.raises(EndOfScript):
        await watcher.run()

    assert api.watched_from == ["10", "15", "16"]
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b")]
    assert api.list_calls == 1
    assert sorted(watcher.keys()) == [("ns", "a"), ("ns", "b")]


async def test_an_expired_version_lists_again_and_reports_what_vanished_meanwhile() -> None:
    api = ScriptedApiserver(
        lists=[
            ObjectList(items=[cm("a", "1"), cm("b", "2")], resource_version="10"),
            ObjectList(items=[cm("a", "30")], resource_version="40"),
        ],
        watches=[ResourceVersionExpired(410, "Expired", "too old resource version")],
    )
    seen: list[tuple[str, str]] = []
    watcher = informer(api, seen)

    with pytest.raises(EndOfScript):
        await watcher.run()

    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    assert watcher.relists == 1
    assert api.watched_from == ["10", "40"]
    assert watcher.get("ns", "b") is None


async def test_a_dropped_connection_resumes_without_listing_again() -> None:
    api = ScriptedApiserver(
        lists=[ObjectList(items=[], resource_version="5")],
        watches=[
            [WatchEvent(type="ADDED", object=cm("a", "6"))],
            KubeUnavailable("connection reset"),
        ],
    )
    seen: list[tuple[str, str]] = []

    with pytest.raises(EndOfScript):
        await informer(api, seen).run()

    assert api.list_calls == 1
    assert api.watched_from == ["5", "6", "6"]


async def test_any_other_error_stops_the_informer_loudly() -> None:
    api = ScriptedApiserver(
        lists=[ObjectList(items=[], resource_version="5")],
        watches=[Forbidden(403, "Forbidden", "configmaps is forbidden")],
    )

    with pytest.raises(Forbidden):
        await informer(api, []).run()


async def test_an_event_older_than_what_the_controller_wrote_is_not_taken_in() -> None:
    api = ScriptedApiserver(
        lists=[ObjectList(items=[cm("a", "1")], resource_version="10")],
        watches=[[WatchEvent(type="MODIFIED", object=cm("a", "11"))]],
    )
    seen: list[tuple[str, str]] = []
    watcher = informer(api, seen)
    await watcher._list()
    watcher.remember(cm("a", "12"))

    await watcher._watch()

    assert seen == [("ADDED", "a")]
    cached = watcher.get("ns", "a")
    assert cached is not None
    assert cached["metadata"]["resourceVersion"] == "12"


async def test_without_an_object_cache_a_deletion_found_on_re_list_still_carries_its_labels() -> (
    None
):
    labelled = cm("a", "1")
    labelled["metadata"]["labels"] = {"fleetbus.io/step": "s1"}
    labelled["data"] = {"big": "x" * 1000}
    api = ScriptedApiserver(
        lists=[
            ObjectList(items=[labelled], resource_version="10"),
            ObjectList(items=[], resource_version="40"),
        ],
        watches=[ResourceVersionExpired(410, "Expired", "too old resource version")],
    )
    deleted: list[dict[str, Any]] = []

    def record(event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            deleted.append(obj)

    watcher = Informer(api, CONFIGMAP, on_event=record, keep_objects=False, backoff_base=0.0)

    with pytest.raises(EndOfScript):
        await watcher.run()

    assert [d["metadata"]["labels"] for d in deleted] == [{"fleetbus.io/step": "s1"}]
    assert "data" not in deleted[0]


def step(name: str, task: str, version: str, *, namespace: str = "ns") -> dict[str, Any]:
    return {
        "apiVersion": "fleetbus.io/v1alpha1",
        "kind": "Step",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": version,
            "managedFields": [{"manager": "fleetbus-controller", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"task": task, "object": {"kind": "ConfigMap", "data": {"k": "v" * 64}}},
    }


def task_index(obj: dict[str, Any]) -> str | None:
    task = (obj.get("spec") or {}).get("task")
    return f"{obj['metadata']['namespace']}/{task}" if task else None


async def test_the_cache_holds_compact_copies_that_readers_cannot_change() -> None:
    api = ScriptedApiserver(
        lists=[ObjectList(items=[step("s1", "web", "1")], resource_version="10")], watches=[]
    )
    watcher = Informer(api, CONFIGMAP, on_event=lambda *_: None, backoff_base=0.0)
    with pytest.raises(EndOfScript):
        await watcher.run()

    held = watcher._objects[("ns", "s1")]
    assert isinstance(held, bytes)
    json = zlib.decompress(held)
    assert b"managedFields" not in json
    assert len(held) < len(json) * 0.6, "compressed: a Step repeats its keys and values"
    first = watcher.get("ns", "s1")
    assert first is not None
    first["spec"]["object"]["data"]["k"] = "changed by a reader"
    again = watcher.get("ns", "s1")
    assert again is not None
    assert again["spec"]["object"]["data"]["k"] == "v" * 64
    assert watcher.items() == [again]


async def test_the_index_finds_the_objects_of_one_value_through_moves_and_deletions() -> None:
    api = ScriptedApiserver(
        lists=[
            ObjectList(
                items=[
                    step("s1", "web", "1"),
                    step("s2", "web", "2"),
                    step("s3", "db", "3"),
                    step("s4", "web", "4", namespace="other"),
                ],
                resource_version="10",
            )
        ],
        watches=[
            [
                WatchEvent(type="MODIFIED", object=step("s2", "db", "11")),
                WatchEvent(type="DELETED", object=step("s1", "web", "12")),
                WatchEvent(type="ADDED", object=step("s5", "web", "13")),
            ]
        ],
    )
    watcher = Informer(api, CONFIGMAP, on_event=lambda *_: None, index=task_index, backoff_base=0.0)
    with pytest.raises(EndOfScript):
        await watcher.run()

    def names(value: str) -> list[str]:
        return sorted(obj["metadata"]["name"] for obj in watcher.indexed(value))

    assert names("ns/web") == ["s5"]
    assert names("ns/db") == ["s2", "s3"]
    assert names("other/web") == ["s4"]
    assert names("ns/none") == []


async def test_a_shared_cache_tells_its_readers_of_every_change_and_survives_a_second_run() -> None:
    """A cache shared with another component: `on_change` fires for what the watch brings,
    what the owner remembers of its own writes and what a deletion removes; a second `run()`
    keeps the cache (and `synced`) while it lists again, and `listed` says when it has."""
    api = ScriptedApiserver(
        lists=[
            ObjectList(items=[cm("a", "1")], resource_version="10"),
            ObjectList(items=[cm("b", "20")], resource_version="21"),
        ],
        watches=[
            [
                WatchEvent(type="MODIFIED", object=cm("a", "11")),
                WatchEvent(type="DELETED", object=cm("a", "12")),
                WatchEvent(type="ADDED", object=cm("a", "13")),
            ],
        ],
    )
    changes: list[str] = []
    watcher = Informer(
        api,
        CONFIGMAP,
        on_event=lambda event_type, obj: None,
        on_change=lambda: changes.append("change"),
    )
    assert not watcher.listed.is_set()
    with pytest.raises(EndOfScript):
        await watcher.run()
    assert len(changes) == 4  # listed a, modified a, deleted a, added a
    watcher.remember(cm("a", "14"))
    assert len(changes) == 5
    assert watcher.synced.is_set()
    assert watcher.listed.is_set()

    changes.clear()
    second = watcher.run()
    with pytest.raises(EndOfScript):
        await second
    assert sorted(watcher.keys()) == [("ns", "b")]
    assert changes == ["change", "change"]  # b listed, a gone
    assert watcher.synced.is_set()
    assert watcher.listed.is_set()

    # A run that cannot list: the cache is no longer current, but still there to read.
    with pytest.raises(EndOfScript):
        await watcher.run()
    assert not watcher.listed.is_set()
    assert watcher.synced.is_set()
    assert watcher.get("ns", "b") is not None
