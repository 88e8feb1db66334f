"""The API's tokens in JetStream, so that every API replica of a hub shares them.

Stream TOKENS keeps one message per token on `fleet.token.<id>` (`max_msgs_per_subject` 1):
the token's record, with the SHA-256 of the token and never the token itself. Every read is a
direct get, answered by any node of the hub's NATS cluster, so a token made, rotated or revoked
through one replica is known to all of them at once. Writes are conditional on the sequence
the writer read (`Nats-Expected-Last-Subject-Sequence`, 0 for a new token): two replicas
rotating one token at once cannot both win, the loser gets a `Conflict`.

A hub that kept its tokens in `<data-dir>/tokens.json` moves them here at its first start
(`migrate_token_file`); the file is removed once every record is in the stream.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import orjson

from api.auth import TokenRecord, read_token_file
from api.errors import Conflict
from events.errors import EventLogUnavailable
from events.port import JetStreamPort, Reply
from events.store import EventStore
from events.streams import TOKENS_PREFIX, TOKENS_STREAM, tokens_stream

log = logging.getLogger(__name__)

PAGE = 500
"""Records read by one batched direct get when listing."""


class SharedTokenTable:
    """`api.auth.TokenTable` on the TOKENS stream of the hub's NATS."""

    def __init__(self, store: EventStore) -> None:
        self.port = JetStreamPort(store.api)
        self._decoder = msgspec.json.Decoder(TokenRecord)
        self._versions: dict[str, int] = {}
        """The stream sequence each record was last read at: the condition of its next write."""

    @classmethod
    async def open(cls, store: EventStore, *, replicas: int = 1) -> SharedTokenTable:
        """The table, its stream created (or kept, with the replicas it has) first."""
        await store.ensure_stream(tokens_stream(replicas), keep=("num_replicas",))
        return cls(store)

    async def records(self) -> list[TokenRecord]:
        found: list[TokenRecord] = []
        seq = 1
        while True:
            page = await self.port.messages_from(TOKENS_STREAM, f"{TOKENS_PREFIX}.>", seq, PAGE)
            found.extend(self._decoded(reply) for reply in page)
            if len(page) < PAGE:
                return found
            seq = int(page[-1].headers["Nats-Sequence"]) + 1

    async def record(self, token_id: str) -> TokenRecord | None:
        if not _is_token_id(token_id):
            return None
        reply = await self.port.last_message(TOKENS_STREAM, _subject(token_id))
        return None if reply is None else self._decoded(reply)

    async def put(self, record: TokenRecord, *, replacing: TokenRecord | None) -> None:
        expected = 0 if replacing is None else self._versions.get(replacing.id, 0)
        subject = _subject(record.id)
        reply = await self.port.request_once(
            subject,
            msgspec.json.encode(record),
            {"Nats-Expected-Last-Subject-Sequence": str(expected)},
        )
        ack = _ack(reply, subject)
        error = ack.get("error")
        if error:
            if int(error.get("err_code", 0)) in (10071, 10164):
                raise Conflict(
                    f"token {record.name!r} was changed through another API replica meanwhile; "
                    "read it again and retry"
                )
            raise EventLogUnavailable(
                f"storing token {record.id} refused: {error.get('description')}"
            )
        self._versions[record.id] = int(ack["seq"])

    async def remove(self, record: TokenRecord) -> None:
        await self.port.purge(TOKENS_STREAM, _subject(record.id))
        self._versions.pop(record.id, None)

    def _decoded(self, reply: Reply) -> TokenRecord:
        try:
            record = self._decoder.decode(reply.data)
        except msgspec.DecodeError as e:
            subject = reply.headers.get("Nats-Subject", "?")
            raise EventLogUnavailable(f"unreadable token record on {subject}: {e}") from e
        self._versions[record.id] = int(reply.headers.get("Nats-Sequence", "0"))
        return record


async def migrate_token_file(path: Path, table: SharedTokenTable) -> int:
    """Move the records of a single hub's `tokens.json` into `table`; how many were moved.

    A record already in the table (a start interrupted after moving it) is left alone; the
    file is removed only once every record is in the table, so an interrupted migration is
    simply done again at the next start."""
    if not _exists(path):
        return 0
    records = read_token_file(path)
    moved = 0
    for record in records:
        if await table.record(record.id) is not None:
            continue
        try:
            await table.put(record, replacing=None)
        except Conflict:
            continue  # stored meanwhile by another replica migrating the same file
        moved += 1
    _remove(path)
    log.warning(
        "moved %d API token(s) from %s into the hub's TOKENS stream (shared by every API "
        "replica); the file is removed",
        moved,
        path,
    )
    return moved


def _exists(path: Path) -> bool:
    return path.exists()


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _subject(token_id: str) -> str:
    return f"{TOKENS_PREFIX}.{token_id}"


def _is_token_id(token_id: str) -> bool:
    """Token ids are 12 hex digits; anything else could not name a single subject."""
    return bool(token_id) and all(c in "0123456789abcdef" for c in token_id)


def _ack(reply: Reply, subject: str) -> dict[str, Any]:
    if reply.status == "503":
        raise EventLogUnavailable(f"no stream answered for {subject} (503)")
    try:
        ack = orjson.loads(reply.data)
    except orjson.JSONDecodeError as e:
        raise EventLogUnavailable(f"unreadable acknowledgement for {subject}") from e
    if not isinstance(ack, dict):
        raise EventLogUnavailable(f"unreadable acknowledgement for {subject}")
    return ack
