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
import logging
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
    """Serves `fleet.keys.*` (see the module docstring)."""

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
        nc = await connect(self.url, name="fleetbus-key-service", credentials=self.credentials)
        self._nc = nc
        try:
            await nc.subscribe(f"{subjects.KEYS_PREFIX}.*", cb=self._serve)
            await nc.flush()
            if ready is not None:
                ready.set()
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
            log.info("delivered data key %s to cluster %s", key_id, cluster)
        await nc.publish(msg.reply, orjson.dumps(reply))
