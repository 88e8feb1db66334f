"""Encoded answers of the read routes, reused while the read models stay the same, with ETags.

The fleet matrix at thousands of clusters is megabytes of JSON built from several queries; a
dashboard, a few `--watch` terminals and scripts ask for it many times a second, and nearly
always nothing has changed. `ReadCache` keeps each route's last encoded answer with the
projection generation it was built from (`HubContext.read_generation`, which the projector
advances after every committed batch): the same generation, and an answer younger than
`max_age`, is served as it is. `max_age` bounds what is not in the read models: whether a
cluster counts as connected depends on the clock and on inventory digests the projector does
not see, so such fields are at most `max_age` old. Without a generation (no projector in this
process) every request builds its answer.

Every answer carries a strong ETag (a digest of its bytes); a request whose `If-None-Match`
names it gets `304 Not Modified` and no body. One build per key runs at a time: requests that
arrive meanwhile wait for it instead of building the same answer again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.status_codes import HTTP_200_OK, HTTP_304_NOT_MODIFIED

MAX_AGE_S = 1.0
ENTRIES = 256


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    etag: str
    generation: int | None
    built_at: float


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` header names `etag` (or `*`); weak tags compare by value."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class ReadCache:
    def __init__(self, *, max_age: float = MAX_AGE_S, entries: int = ENTRIES) -> None:
        self.max_age = max_age
        self.entries = entries
        self._answers: OrderedDict[Hashable, Answer] = OrderedDict()
        self._building: dict[Hashable, asyncio.Future[Answer]] = {}
        self.builds = 0
        """How many answers were built (the rest were served from here)."""

    async def answer(
        self, key: Hashable, generation: int | None, build: Callable[[], Awaitable[bytes]]
    ) -> Answer:
        """The answer for `key` at `generation`: the kept one while it is current, else built."""
        kept = self._answers.get(key)
        if kept is not None and self._current(kept, generation):
            self._answers.move_to_end(key)
            return kept
        pending = self._building.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        try:
            body = await build()
            self.builds += 1
            built = Answer(body, etag_of(body), generation, time.monotonic())
            if generation is not None:
                self._answers[key] = built
                self._answers.move_to_end(key)
                while len(self._answers) > self.entries:
                    self._answers.popitem(last=False)
            future.set_result(built)
            return built
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._building[key]

    def _current(self, kept: Answer, generation: int | None) -> bool:
        return (
            generation is not None
            and kept.generation == generation
            and time.monotonic() - kept.built_at < self.max_age
        )


def json_response(request: Request[Any, Any, Any], answer: Answer) -> Response[bytes]:
    """`answer` as a JSON response with its ETag, or 304 when the client has it already."""
    headers = {"ETag": answer.etag, "Cache-Control": "no-cache"}
    if matches(request.headers.get("if-none-match"), answer.etag):
        return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(
        content=answer.body,
        status_code=HTTP_200_OK,
        media_type="application/json",
        headers=headers,
    )
