"""What the hub moved off each lost node, kept in JetStream so a restarted hub still knows it.

`provisioning.DurableRehoming` creates the one-replica durables of a lost node again on the
nodes that are up, and once that node is back deletes and creates them once more so it keeps
no copy of them (see its docstring). Which durables those are must outlive the hub process:
a hub restarted while the node is down would otherwise never reset them, and the node would
come back with stale copies. So each node's set is one message in stream `DURABLE_MOVES`
(`fleet.durables-moved.<node>`, the last message per subject kept, as many replicas as the
hub's streams), written before the durables are moved and removed once they are reset: a
few messages at most, one per lost node, read once when the hub starts.

The stream is created when the hub starts (a replicated stream cannot be placed while one of
its nodes is down); a hub that cannot create it yet keeps what it moved in memory only and
tries again at its next move.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from typing import Any

import orjson

from events.errors import AppendRefused
from events.store import EventStore
from events.streams import NANOS

log = logging.getLogger(__name__)

MOVES_STREAM = "DURABLE_MOVES"
MOVES_PREFIX = "fleet.durables-moved"
STREAM_NOT_FOUND = 10059
NO_MESSAGE = 10037


def moves_stream(replicas: int = 1) -> dict[str, Any]:
    """The stream of what was moved off each node: one message per node."""
    return {
        "name": MOVES_STREAM,
        "subjects": [f"{MOVES_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "max_msgs_per_subject": 1,
        "allow_direct": True,
        "duplicate_window": 2 * 60 * NANOS,
    }


def moves_subject(node: str) -> str:
    """The subject of `node`'s record; a server name may hold characters a subject token
    cannot (dots, spaces), so it is written base64url."""
    token = base64.urlsafe_b64encode(node.encode()).decode().rstrip("=")
    return f"{MOVES_PREFIX}.{token}"


def encode_moves(node: str, clusters: Iterable[str]) -> bytes:
    return orjson.dumps({"node": node, "clusters": sorted(set(clusters))})


def decode_moves(data: bytes) -> tuple[str, set[str]]:
    """A record as written by `encode_moves`; `ValueError` for anything else."""
    try:
        record = orjson.loads(data)
        node = record["node"]
        clusters = record["clusters"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"not a record of moved durables: {e}") from e
    if not isinstance(node, str) or not isinstance(clusters, list):
        raise ValueError("not a record of moved durables: node or clusters of the wrong type")
    return node, {str(name) for name in clusters}


class DurableMoves:
    """The records in `DURABLE_MOVES`, through the hub's store (errors: `events.errors`)."""

    def __init__(self, store: EventStore, replicas: int = 1) -> None:
        self.store = store
        self.replicas = replicas
        self.ensured = False

    async def ensure(self) -> None:
        """Create the stream (or leave it as it is); idempotent."""
        await self.store.ensure_stream(moves_stream(self.replicas))
        self.ensured = True

    async def load(self) -> dict[str, set[str]]:
        """Node -> the clusters whose durables were moved off it and not reset yet."""
        try:
            info = await self.store.api_request(
                f"STREAM.INFO.{MOVES_STREAM}", {"subjects_filter": f"{MOVES_PREFIX}.>"}
            )
        except AppendRefused as e:
            if f"code {STREAM_NOT_FOUND}" in str(e):
                return {}
            raise
        moved: dict[str, set[str]] = {}
        for subject in sorted((info.get("state") or {}).get("subjects") or {}):
            try:
                answer = await self.store.api_request(
                    f"STREAM.MSG.GET.{MOVES_STREAM}", {"last_by_subj": subject}
                )
            except AppendRefused as e:
                if f"code {NO_MESSAGE}" in str(e):  # forgotten since the info was read
                    continue
                raise
            data = base64.b64decode((answer.get("message") or {}).get("data") or "")
            try:
                node, clusters = decode_moves(data)
            except ValueError as e:
                log.warning("%s on %s skipped: %s", MOVES_STREAM, subject, e)
                continue
            moved.setdefault(node, set()).update(clusters)
        return moved

    async def record(self, node: str, clusters: Iterable[str]) -> None:
        """Keep `clusters` as the durables moved off `node` (replacing its earlier record)."""
        if not self.ensured:
            await self.ensure()
        reply = await self.store.api.request(
            moves_subject(node), encode_moves(node, clusters), None
        )
        answer = orjson.loads(reply.data) if reply.data else {}
        if isinstance(answer, dict) and answer.get("error"):
            err = answer["error"]
            raise AppendRefused(
                f"{MOVES_STREAM}: record of {node} refused: {err.get('description')} "
                f"(code {err.get('err_code')})"
            )

    async def forget(self, node: str) -> None:
        """Remove `node`'s record: its durables were reset."""
        try:
            await self.store.api_request(
                f"STREAM.PURGE.{MOVES_STREAM}", {"filter": moves_subject(node)}
            )
        except AppendRefused as e:
            if f"code {STREAM_NOT_FOUND}" not in str(e):
                raise
