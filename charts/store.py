"""The hub's chart archive store: Helm chart .tgz files kept by content in JetStream.

A published Helm taskset must be re-rendered later with per-cluster values, so the chart it
was rendered from is kept on the hub, in the JetStream Object Store bucket `CHARTS`. Archives
are content-addressed: the object's name is `sha256:<hex>` of its bytes, which is what
`TasksetPublished.chart_archive` holds. Storing the same archive twice stores it once; reading
one checks its bytes against its name, so a snapshot can never be re-rendered from the wrong
chart.

This is an adapter module: it speaks NATS, retries `events.connection.TRANSIENT_ERRORS` with
the one retry policy, and lets no `nats` exception out (they become `charts.errors` and
`events.errors`). It is not part of the event catalog: archives are content, not events.

Archives are sealed at rest with the hub's data key (a chart's `values.yaml` may hold default
passwords): the bucket holds envelopes (`sealing.envelope`, the address as associated data),
and the address stays the digest of the plain archive. An archive stored before sealing is
read as it is and sealed when it is stored again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api as js_api
from nats.js.object_store import ObjectStore

from charts.errors import ChartArchiveCorrupt, ChartArchiveMissing
from events.connection import TRANSIENT_ERRORS, retrying
from events.errors import EventLogUnavailable
from events.store import EventStore
from sealing.envelope import (
    HUB_SCOPE,
    DataKeys,
    is_sealed_bytes,
    open_bytes,
    seal_bytes,
    sealed_size,
)

T = TypeVar("T")

CHARTS_BUCKET = "CHARTS"
ADDRESS_PREFIX = "sha256:"


def chart_address(archive: bytes) -> str:
    """The content address of a chart archive: `sha256:<hex>` of its bytes."""
    return ADDRESS_PREFIX + hashlib.sha256(archive).hexdigest()


def _check_address(address: str) -> None:
    digest = address.removeprefix(ADDRESS_PREFIX)
    valid = address.startswith(ADDRESS_PREFIX) and len(digest) == 64
    if not valid or any(char not in "0123456789abcdef" for char in digest):
        raise ChartArchiveMissing(f"{address!r} is not a chart archive address (sha256:<hex>)")


class ChartStore:
    """Put and get chart archives by content address, in the hub's `CHARTS` bucket."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        domain: str | None = None,
        timeout: float = 10.0,
        attempts: int = 5,
        replicas: int = 1,
        keys: DataKeys | None = None,
    ) -> None:
        self.js = nc.jetstream(domain=domain, timeout=timeout)
        self.keys = keys
        self.attempts = attempts
        self.replicas = replicas
        self._bucket: ObjectStore | None = None

    @classmethod
    def beside(cls, store: EventStore, *, timeout: float = 10.0) -> ChartStore:
        """A chart store on the event store's connection and JetStream domain."""
        return cls(
            store.api.nc,
            domain=store.api.domain,
            timeout=max(store.api.timeout, timeout),
            keys=store.sealer.keys if store.sealer is not None else None,
        )

    async def _open(self) -> ObjectStore:
        """The bucket, created on first use (creating an identical bucket again is a no-op)."""
        if self._bucket is None:
            try:
                self._bucket = await self.js.object_store(CHARTS_BUCKET)
            except nats.js.errors.BucketNotFoundError:
                self._bucket = await self.js.create_object_store(
                    CHARTS_BUCKET,
                    js_api.ObjectStoreConfig(
                        description="Helm chart archives of published tasksets, by sha256",
                        storage=js_api.StorageType.FILE,
                        replicas=self.replicas,
                    ),
                )
        return self._bucket

    async def ensure(self) -> None:
        """Create the bucket now (the hub may call this at start; first use creates it too)."""
        await self._with_retries(self._open, "open the chart archive bucket")

    async def put(self, archive: bytes) -> str:
        """Store `archive` (once) and return its address."""
        address = chart_address(archive)
        keys = self.keys

        async def store() -> None:
            bucket = await self._open()
            try:
                info = await bucket.get_info(address)
            except nats.js.errors.ObjectNotFoundError:
                info = None
            if keys is None:
                if info is not None and info.size == len(archive):
                    return
                await bucket.put(address, archive)
                return
            key_id, _ = keys.active_key(HUB_SCOPE)
            if info is not None and info.size == sealed_size(len(archive), key_id):
                return
            await bucket.put(address, seal_bytes(keys, HUB_SCOPE, archive, address.encode()))

        await self._with_retries(store, f"store chart archive {address}")
        return address

    async def get(self, address: str) -> bytes:
        """The archive stored under `address`; raises `ChartArchiveMissing` if there is none."""
        _check_address(address)

        async def fetch() -> bytes:
            bucket = await self._open()
            result = await bucket.get(address)
            return bytes(result.data or b"")

        data = await self._with_retries(fetch, f"read chart archive {address}")
        if is_sealed_bytes(data):
            if self.keys is None:
                raise ChartArchiveCorrupt(
                    f"the chart archive {address} is sealed, and this reader has no keyring"
                )
            data = open_bytes(self.keys, data, address.encode(), f"chart archive {address}")
        if chart_address(data) != address:
            raise ChartArchiveCorrupt(
                f"the stored chart archive {address} does not match its digest"
            )
        return data

    async def contains(self, address: str) -> bool:
        _check_address(address)

        async def look() -> bool:
            bucket = await self._open()
            try:
                await bucket.get_info(address)
            except nats.js.errors.ObjectNotFoundError:
                return False
            return True

        return await self._with_retries(look, f"look up chart archive {address}")

    async def _with_retries(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        """Run `operation`, retrying transient transport errors; translate the rest."""
        try:
            async for attempt in retrying(self.attempts):
                with attempt:
                    return await operation()
        except nats.js.errors.ObjectNotFoundError as e:
            raise ChartArchiveMissing(f"cannot {what}: no such archive on the hub") from e
        except nats.js.errors.DigestMismatchError as e:
            raise ChartArchiveCorrupt(f"cannot {what}: stored chunks fail their digest") from e
        except TRANSIENT_ERRORS as e:
            raise EventLogUnavailable(f"cannot {what}: no answer from JetStream ({e!r})") from e
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot {what}: {e}") from e
        raise AssertionError("unreachable: tenacity either returns or raises")
