"""List-then-watch, owned here: one kind, one label selector, a cache, and a callback per change.

Client libraries handle an expired resourceVersion badly (the official clients retry once with
the same version and raise; lightkube silently restarts from scratch, replaying everything as
ADDED). The loop here follows kopf's `continuous_watch`:

    list → remember the list's resourceVersion → watch from it with bookmarks → on every event,
    BOOKMARK included, remember its resourceVersion → when the server ends the watch (its
    `timeoutSeconds`), watch again from that version → on 410 Gone, list again and diff the new
    list against the cache, so deletions missed during the gap still arrive as DELETED.

Connection trouble is retried with capped exponential backoff, resuming from the last version;
any other error from the apiserver ends `run()` with that error: fail loudly, never spin.

The cache can hold whole objects (for the controller's own resources, which reconcilers read;
without their managedFields, which nothing reads there) or only each object's identity, labels
and resourceVersion (for applied objects, watched for
readiness and drift only: an edge controller should not keep a second copy of every object it
manages, but a deletion noticed on a re-list must still say which Task and Step it hits).

Cached objects are held as their compact JSON (`bytes`), compressed with zlib's fastest
level (a small Task or Step compresses to 40 to 50 % of its JSON: it repeats its keys, labels,
names and digests), decoded on each read: a small Kubernetes object as nested Python dicts
takes several times its JSON size, and the cache is what grows with every taskset an edge
holds. Every read returns a fresh copy, so no caller can change what the cache holds. An
`index` (a function of the object) lets readers find the objects that share a value (the
Steps of one Task) without decoding the others.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec

from cluster_controller.errors import KubeUnavailable, ResourceVersionExpired
from cluster_controller.kube import ObjectList, WatchEvent
from kube_contract.resources import ResourceInfo

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""
OnEvent = Callable[[str, dict[str, Any]], None]
"""Called with "ADDED", "MODIFIED" or "DELETED" and the object; must be quick (enqueue only)."""
IndexOf = Callable[[dict[str, Any]], str | None]
"""An object's index value (None: not indexed)."""

MAX_BACKOFF = 30.0


class WatchSource(Protocol):
    """What an informer needs from the apiserver (`cluster_controller.kube.Kube` is one)."""

    async def list(
        self, info: ResourceInfo, *, namespace: str = "", label_selector: str = "", limit: int = 500
    ) -> ObjectList: ...

    def watch(
        self,
        info: ResourceInfo,
        *,
        resource_version: str,
        namespace: str = "",
        label_selector: str = "",
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]: ...


_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder()


def _compact(obj: dict[str, Any]) -> bytes:
    return zlib.compress(_encode(obj), 1)


def _decode(encoded: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = _decoder.decode(zlib.decompress(encoded))
    return decoded


def key_of(obj: dict[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What an informer without object cache keeps: identity and labels, for DELETED events."""
    metadata = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "labels", "resourceVersion", "uid")
            if key in metadata
        },
    }


def _trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """A whole object as the cache keeps it: without `metadata.managedFields`, which nothing
    reads from the cache (the drift check reads them on the applied objects' watch events)
    and which is often the largest part of a small object."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    return obj


def _newer_or_same(held: str, incoming: str) -> bool:
    """Whether the cached version is at least as new as `incoming`.

    resourceVersions are opaque, but within one object they only grow; the apiserver's are
    decimal etcd revisions. Anything unparsable counts as newer, so it is never dropped.
    """
    try:
        return int(held) >= int(incoming)
    except ValueError:
        return False


class Informer:
    def __init__(
        self,
        kube: WatchSource,
        info: ResourceInfo,
        *,
        on_event: OnEvent,
        label_selector: str = "",
        namespace: str = "",
        keep_objects: bool = True,
        index: IndexOf | None = None,
        watch_timeout: int = 300,
        backoff_base: float = 0.25,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """`on_change`: called whenever what the cache holds changes, also by `remember`
        (whose object's watch event is then not passed on): for readers of a shared cache."""
        self.kube = kube
        self.info = info
        self.label_selector = label_selector
        self.namespace = namespace
        self.keep_objects = keep_objects
        self.watch_timeout = watch_timeout
        self.backoff_base = backoff_base
        self._on_event = on_event
        self._on_change = on_change
        self._index_of = index
        self._objects: dict[Key, bytes] = {}
        """Each object's compact JSON, compressed (see the module's docstring)."""
        self._versions: dict[Key, str] = {}
        self._indexed: dict[str, set[Key]] = {}
        self._index_values: dict[Key, str] = {}
        self.synced = asyncio.Event()
        """Set once the informer has listed: its cache holds every object (kept set after that,
        also while a new `run()` lists again, so readers of a shared cache are not held up)."""
        self.listed = asyncio.Event()
        """Set once the current `run()` has listed: its cache is current again."""
        self.resource_version = ""
        self.relists = 0
        """How many times the informer listed again after its version expired."""

    # --- cache -------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        encoded = self._objects.get((namespace, name))
        return _decode(encoded) if encoded is not None else None

    def items(self) -> list[dict[str, Any]]:
        return [_decode(encoded) for encoded in self._objects.values()]

    def indexed(self, value: str) -> list[dict[str, Any]]:
        """The objects whose index value is `value` (needs `index`)."""
        keys = self._indexed.get(value, ())
        return [_decode(self._objects[key]) for key in keys if key in self._objects]

    def keys(self) -> list[Key]:
        return list(self._versions)

    def remember(self, obj: dict[str, Any]) -> None:
        """Take in an object the controller just wrote, unless the cache already has newer."""
        key = key_of(obj)
        if key in self._versions and _newer_or_same(self._versions[key], _version(obj)):
            return
        self._store(obj)

    def _store(self, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        self._versions[key] = _version(obj)
        # msgspec's encoder returns bytes of the exact size; orjson's keep a spare capacity of
        # up to several KiB each, which a cache of thousands of objects cannot afford.
        self._objects[key] = _compact(_trimmed(obj) if self.keep_objects else _slim(obj))
        if self._index_of is not None:
            self._unindex(key)
            value = self._index_of(obj)
            if value is not None:
                self._index_values[key] = value
                self._indexed.setdefault(value, set()).add(key)
        if self._on_change is not None:
            self._on_change()

    def _unindex(self, key: Key) -> None:
        value = self._index_values.pop(key, None)
        if value is not None:
            keys = self._indexed.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._indexed[value]

    def _forget(self, key: Key) -> None:
        self._versions.pop(key, None)
        self._objects.pop(key, None)
        self._unindex(key)
        if self._on_change is not None:
            self._on_change()

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch for ever; returns only by cancellation or a non-transient error."""
        failures = 0
        need_list = True
        self.listed.clear()
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                failures = 0
            except ResourceVersionExpired:
                log.info(
                    "%s: resourceVersion %s expired, listing again",
                    self.info.plural,
                    self.resource_version,
                )
                self.relists += 1
                need_list = True
            except KubeUnavailable as e:
                failures += 1
                delay = min(MAX_BACKOFF, self.backoff_base * 2**failures)
                log.warning("%s: %s; retrying in %.1fs", self.info.plural, e, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        listing = await self.kube.list(
            self.info, namespace=self.namespace, label_selector=self.label_selector
        )
        seen: set[Key] = set()
        for obj in listing.items:
            key = key_of(obj)
            seen.add(key)
            previous = self._versions.get(key)
            self._store(obj)
            if previous is None:
                self._on_event("ADDED", obj)
            elif previous != _version(obj):
                self._on_event("MODIFIED", obj)
        for key in [k for k in self._versions if k not in seen]:
            gone = self.get(*key) or self._tombstone(key)
            self._forget(key)
            self._on_event("DELETED", gone)
        self.resource_version = listing.resource_version
        self.synced.set()
        self.listed.set()

    def _tombstone(self, key: Key) -> dict[str, Any]:
        namespace, name = key
        metadata: dict[str, Any] = {"name": name}
        if namespace:
            metadata["namespace"] = namespace
        return {
            "apiVersion": self.info.api_version,
            "kind": self.info.kind,
            "metadata": metadata,
        }

    async def _watch(self) -> None:
        async for event in self.kube.watch(
            self.info,
            resource_version=self.resource_version,
            namespace=self.namespace,
            label_selector=self.label_selector,
            timeout_seconds=self.watch_timeout,
        ):
            if event.resource_version:
                self.resource_version = event.resource_version
            if event.type == "BOOKMARK":
                continue
            key = key_of(event.object)
            if event.type == "DELETED":
                self._forget(key)
            elif key in self._versions and _newer_or_same(
                self._versions[key], event.resource_version
            ):
                continue
            else:
                self._store(event.object)
            self._on_event(event.type, event.object)
