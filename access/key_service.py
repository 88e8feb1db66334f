"""The hub's key service: each edge gets its own cluster's data keys, and nothing else.

DESIRED holds every ClusterTask sealed with its cluster's data key (`scheduler.bus`). An edge
that meets a key id it does not hold asks `fleet.keys.<cluster>` over its leaf link (mutual TLS,
its certificate mapped to its NATS user) or its client connection; the cluster's permissions
let it publish on its own `fleet.keys.<cluster>` only, and the answer comes back on its own
inbox, which no other cluster may subscribe to. The service answers only with keys of the
scope `cluster:<cluster>` the subject names, only while the cluster is registered, and never
with the hub's own keys: one cluster's credentials can never open another cluster's data.
Keys travel only inside the TLS link and are never stored at the edge.

This module speaks NATS (like `access.consumer_gate`), on a connection of its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from events import subjects
from events.store import connect
from sealing.envelope import DataKeys, cluster_scope, scope_of_key
from sealing.errors import SealingError

log = logging.getLogger(__name__)


def key_reply(
    keys: DataKeys, cluster: str, key_id: str, registered: Collection[str]
) -> dict[str, str]:
    """The answer to `cluster` asking for `key_id`: the key, or why not (pure but for `keys`)."""
    if cluster not in registered:
        return {"error": f"cluster {cluster} is not registered"}
    if scope_of_key(key_id) != cluster_scope(cluster):
        return {"error": f"data key {key_id} is not a key of cluster {cluster}"}
    try:
        key = keys.key(key_id)
    except SealingError as e:
        return {"error": str(e)}
    return {"id": key_id, "key": base64.b64encode(key).decode()}


class KeyService:
    """Serves `fleet.keys.*` (see the module docstring).

    The service runs on a thread of its own, with its own event loop and connection: at fleet
    scale every cluster asks for its key when its first sealed ClusterTask arrives, all at
    once, while the hub's main loop is busy with the same delivery (projecting thousands of
    events, provisioning). On the main loop each answer waited for every callback queued
    before it; on its own thread it no longer does, though it still shares the process's CPU
    and interpreter lock with the rest of the hub. `keys` and `registered` are read from
    that thread: give it a keyring of its own (`DataDir.keyring()` opens a new one)."""

    def __init__(
        self,
        *,
        url: str | list[str],
        credentials: Path,
        keys: DataKeys,
        registered: Callable[[], Collection[str]],
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.keys = keys
        self.registered = registered
        self.refusals = 0
        self._nc: NatsClient | None = None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled (or until the service fails, with its error); `ready` is set
        once the service is subscribed."""
        caller = asyncio.get_running_loop()
        ended: asyncio.Future[BaseException | None] = caller.create_future()
        running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []
        handed = threading.Event()

        def subscribed() -> None:
            if ready is not None:
                caller.call_soon_threadsafe(ready.set)

        async def serve() -> None:
            task = asyncio.current_task()
            assert task is not None
            running.append((asyncio.get_running_loop(), task))
            handed.set()
            await self._serve_forever(subscribed)

        def main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(serve())
            except BaseException as e:  # noqa: BLE001 - handed to the caller's loop, raised there
                error = e
            finally:
                handed.set()
                with contextlib.suppress(RuntimeError):  # the caller's loop already closed
                    caller.call_soon_threadsafe(_settle, ended, error)

        thread = threading.Thread(target=main, name="fleetbus-key-service", daemon=True)
        thread.start()
        try:
            error = await asyncio.shield(ended)
        finally:
            if not ended.done():
                await asyncio.to_thread(handed.wait)
                for loop, task in running:
                    with contextlib.suppress(RuntimeError):  # its loop already stopped
                        loop.call_soon_threadsafe(task.cancel)
                await asyncio.to_thread(thread.join)
        if error is not None and not isinstance(error, asyncio.CancelledError):
            raise error

    async def _serve_forever(self, subscribed: Callable[[], None]) -> None:
        nc = await connect(self.url, name="fleetbus-key-service", credentials=self.credentials)
        self._nc = nc
        try:
            await nc.subscribe(f"{subjects.KEYS_PREFIX}.*", cb=self._serve)
            await nc.flush()
            subscribed()
            await asyncio.Event().wait()
        finally:
            self._nc = None
            await nc.close()

    async def _serve(self, msg: Msg) -> None:
        nc = self._nc
        if nc is None or not msg.reply:
            return
        cluster = msg.subject.removeprefix(f"{subjects.KEYS_PREFIX}.")
        key_id = msg.data.decode(errors="replace").strip()
        reply = key_reply(self.keys, cluster, key_id, self.registered())
        if "error" in reply:
            self.refusals += 1
            log.warning("refused data key %s to cluster %s: %s", key_id, cluster, reply["error"])
        else:
            log.debug("delivered data key %s to cluster %s", key_id, cluster)
        await nc.publish(msg.reply, orjson.dumps(reply))


def _settle(ended: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not ended.done():
        ended.set_result(error)
