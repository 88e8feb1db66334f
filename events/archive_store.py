"""The archive of EVENTS in JetStream: segments written once, listed, and read back.

Segments live in the stream EVENTS_ARCHIVE (`events.streams.archive_stream`), one message per
segment on `fleet.archive.segment.<index>`. One message per segment makes a segment's write
atomic (it is there whole or not at all, so an archiver killed mid-write leaves nothing to
repair), the server refuses to overwrite it (`Nats-Expected-Last-Subject-Sequence: 0`) and to
delete or purge it (`deny_delete`, `deny_purge`), it is replicated like the hub's other streams,
and every hub process reads it through its NATS connection, wherever it runs.

Reading is for `events.replay`, which serves a read from before the live log's first sequence
from here, transparently. Segments are immutable and named by their hash, so what one process
decoded is cached by hash: the subjects each segment holds (reads filtered on a subject skip
the segments without it) and the most recently read bodies (`CACHE_BYTES`); the listing is
reused while the stream holds the same messages (one stream info asks).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from events.archive import (
    H_HASH,
    ArchivedMessage,
    ArchiveError,
    EncodedSegment,
    SegmentBody,
    SegmentHeader,
    decode_segment,
    decode_subject_index,
    encode_subject_index,
    subjects_of,
)
from events.errors import EventLogError
from events.port import JetStreamPort, Reply
from events.stream_api import StreamApi
from events.streams import ARCHIVE_STREAM, archive_stream
from events.subjects import (
    ARCHIVE_SEGMENT_FILTER,
    archive_index_subject,
    archive_segment_subject,
)

CACHE_BYTES = 64 * 1024 * 1024
"""Uncompressed bytes of decoded segment bodies one process keeps."""
CONFLICT_CODES = frozenset({10071})


class SegmentExists(ArchiveError):
    """Another segment is stored under this index already (a second archiver wrote it)."""


def subject_matches(subject_filter: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` one or more trailing tokens."""
    wanted = subject_filter.split(".")
    tokens = subject.split(".")
    for position, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > position
        if position >= len(tokens) or (token != "*" and token != tokens[position]):
            return False
    return len(tokens) == len(wanted)


@dataclass
class _Cache:
    bodies: OrderedDict[str, tuple[SegmentBody, int]]
    """Segment hash -> (body, uncompressed bytes), least recently read first."""
    subjects: dict[str, frozenset[str]]
    size: int = 0


_CACHE = _Cache(OrderedDict(), {})
_LISTINGS: dict[tuple[int, str | None], tuple[tuple[str, int], list[SegmentHeader]]] = {}
"""(connection, domain) -> (the archive stream's creation and last sequence, its listing)."""


def _remember(header: SegmentHeader, body: SegmentBody) -> None:
    _CACHE.subjects[header.hash] = subjects_of(body)
    if header.hash in _CACHE.bodies:
        _CACHE.bodies.move_to_end(header.hash)
        return
    _CACHE.bodies[header.hash] = (body, header.raw_bytes)
    _CACHE.size += header.raw_bytes
    while _CACHE.size > CACHE_BYTES and len(_CACHE.bodies) > 1:
        _, (_, size) = _CACHE.bodies.popitem(last=False)
        _CACHE.size -= size


def forget_segments() -> None:
    """Empty this process's cache of decoded segments (what a freshly started process has)."""
    _CACHE.bodies.clear()
    _CACHE.subjects.clear()
    _CACHE.size = 0
    _LISTINGS.clear()


class ArchiveStore:
    """The archive segments of the hub's EVENTS, on the connection and domain of `api`."""

    def __init__(self, api: StreamApi, *, replicas: int = 1) -> None:
        self.api = StreamApi(
            api.nc, ARCHIVE_STREAM, domain=api.domain, timeout=api.timeout, attempts=api.attempts
        )
        self.port = JetStreamPort(self.api)
        self.replicas = replicas
        self._where = (id(api.nc), api.domain)

    async def ensure(self) -> None:
        await self.api.ensure_stream(archive_stream(self.replicas))

    async def exists(self) -> bool:
        return await self.port.stream_info(ARCHIVE_STREAM) is not None

    async def listing(self) -> list[SegmentHeader]:
        """Every segment's index entry, by index (no bodies are transferred). Segments are only
        ever added, so a listing is reused while the stream holds the same messages."""
        info = await self.port.stream_info(ARCHIVE_STREAM)
        if info is None:
            return []
        version = (str(info.get("created", "")), int(info["state"]["last_seq"]))
        cached = _LISTINGS.get(self._where)
        if cached is not None and cached[0] == version:
            return list(cached[1])
        found = await self.port.last_headers_per_subject(ARCHIVE_STREAM, ARCHIVE_SEGMENT_FILTER)
        headers = sorted(
            (
                SegmentHeader.from_headers(h, int(h.get("Nats-Msg-Size", "0") or 0))
                for h in found.values()
            ),
            key=lambda header: header.index,
        )
        _LISTINGS[self._where] = (version, headers)
        return list(headers)

    async def payload(self, header: SegmentHeader) -> bytes | None:
        """The stored (compressed) bytes of a segment; None when its message is gone."""
        reply = await self.port.last_message(ARCHIVE_STREAM, archive_segment_subject(header.index))
        return None if reply is None else reply.data

    async def stored_header(self, index: int) -> SegmentHeader | None:
        reply = await self.port.last_message(ARCHIVE_STREAM, archive_segment_subject(index))
        if reply is None:
            return None
        return SegmentHeader.from_headers(reply.headers, len(reply.data))

    async def body(self, header: SegmentHeader) -> SegmentBody:
        """A segment's body, verified against its hash (cached by hash)."""
        cached = _CACHE.bodies.get(header.hash)
        if cached is not None:
            _CACHE.bodies.move_to_end(header.hash)
            return cached[0]
        payload = await self.payload(header)
        if payload is None:
            raise ArchiveError(
                f"archive segment {header.index} (sequences {header.from_seq}.."
                f"{header.to_seq}) is listed but its message is gone"
            )
        body = await asyncio.to_thread(decode_segment, header, payload)
        _remember(header, body)
        return body

    async def subject_index(self, header: SegmentHeader) -> frozenset[str] | None:
        """The subjects segment `header` holds, from its index message (cached); None when it
        has none yet or the index is not this segment's."""
        known = _CACHE.subjects.get(header.hash)
        if known is not None:
            return known
        reply = await self.port.last_message(ARCHIVE_STREAM, archive_index_subject(header.index))
        if reply is None or reply.headers.get(H_HASH) != header.hash:
            return None
        subjects = decode_subject_index(reply.data)
        if subjects is not None:
            _CACHE.subjects[header.hash] = subjects
        return subjects

    async def stored_index(self, header: SegmentHeader) -> frozenset[str] | None:
        """The subject index stored for segment `header`, read afresh (for verification)."""
        reply = await self.port.last_message(ARCHIVE_STREAM, archive_index_subject(header.index))
        if reply is None or reply.headers.get(H_HASH) != header.hash:
            return None
        return decode_subject_index(reply.data) or frozenset({"(unreadable index)"})

    async def write_index(self, header: SegmentHeader, subjects: frozenset[str]) -> None:
        """Store the subject index of segment `header`, once (again: a no-op)."""
        await self._write_once(
            archive_index_subject(header.index),
            encode_subject_index(subjects),
            {H_HASH: header.hash},
            f"subjects-{header.index}-{header.hash}",
            what=f"the subject index of archive segment {header.index}",
            hash_=header.hash,
        )

    async def write(self, segment: EncodedSegment) -> None:
        """Store `segment` under its index, once. Writing the same segment again is a no-op;
        a different segment under that index raises `SegmentExists`."""
        header = segment.header
        await self._write_once(
            archive_segment_subject(header.index),
            segment.payload,
            header.headers(),
            f"segment-{header.index}-{header.hash}",
            what=f"archive segment {header.index}",
            hash_=header.hash,
        )

    async def _write_once(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        msg_id: str,
        *,
        what: str,
        hash_: str,
    ) -> None:
        """Publish on `subject` only if nothing is there yet; what is there already counts
        as written when it carries the same segment hash."""
        headers = headers | {
            "Nats-Expected-Last-Subject-Sequence": "0",
            "Nats-Msg-Id": msg_id,
        }
        reply = await self.port.request(subject, payload, headers)
        answer = _answer(reply)
        error = answer.get("error")
        if not isinstance(error, dict):
            return
        if int(error.get("err_code", 0)) in CONFLICT_CODES:
            stored = await self.port.last_message(ARCHIVE_STREAM, subject)
            if stored is not None and stored.headers.get(H_HASH) == hash_:
                return
            raise SegmentExists(
                f"{what} is stored already with another content: another archiver wrote it"
            )
        raise ArchiveError(
            f"cannot store {what}: {error.get('description')} (code {error.get('err_code')})"
        )

    async def messages(
        self,
        segments: list[SegmentHeader],
        *,
        from_seq: int | None,
        since: datetime | None,
        until: datetime | None,
        subject: str | None,
        to_seq: int,
    ) -> AsyncGenerator[ArchivedMessage, None]:
        """The archived messages of `segments` from `from_seq` (or `since`) up to `to_seq`,
        `until` and under `subject`, in sequence order."""
        start = from_seq or 1
        for header in segments:
            if header.to_seq < start or header.from_seq > to_seq:
                continue
            if since is not None and header.last_time is not None and header.last_time < since:
                continue
            if until is not None and header.first_time is not None and header.first_time > until:
                return
            if subject:
                known = await self.subject_index(header)
                if known is not None and not any(subject_matches(subject, s) for s in known):
                    continue
            body = await self.body(header)
            for message in body.messages:
                if message.seq < start or message.seq > to_seq:
                    continue
                stored_at = message.stored_at
                if since is not None and stored_at < since:
                    continue
                if until is not None and stored_at > until:
                    return
                if subject and not subject_matches(subject, message.subject):
                    continue
                yield message


def _answer(reply: Reply) -> dict[str, Any]:
    try:
        answer = orjson.loads(reply.data)
    except orjson.JSONDecodeError as e:
        raise EventLogError(f"unreadable answer storing an archive segment: {e}") from e
    return answer if isinstance(answer, dict) else {}
