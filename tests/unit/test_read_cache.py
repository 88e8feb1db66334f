"""`api.read_cache`: an answer is reused only while its generation is current and it is young,
one build runs per key at a time, failures are not kept, and If-None-Match is read as HTTP says."""

from __future__ import annotations

import asyncio

import pytest

from api.read_cache import ReadCache, etag_of, matches


class Builder:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> bytes:
        self.calls += 1
        await self.release.wait()
        return f"answer {self.calls}".encode()


async def test_an_answer_is_reused_while_its_generation_is_current() -> None:
    cache, build = ReadCache(max_age=3600), Builder()
    first = await cache.answer("status", 1, build)
    second = await cache.answer("status", 1, build)
    assert (first.body, second.body, build.calls) == (b"answer 1", b"answer 1", 1)
    third = await cache.answer("status", 2, build)
    assert (third.body, build.calls) == (b"answer 2", 2)
    assert third.etag != first.etag
    other = await cache.answer("clusters", 2, build)
    assert other.body == b"answer 3", "each key has its own answer"


async def test_an_old_answer_is_built_again_even_at_the_same_generation() -> None:
    cache, build = ReadCache(max_age=0.0), Builder()
    await cache.answer("status", 1, build)
    await cache.answer("status", 1, build)
    assert build.calls == 2


async def test_without_a_generation_every_request_builds() -> None:
    cache, build = ReadCache(max_age=3600), Builder()
    await cache.answer("status", None, build)
    await cache.answer("status", None, build)
    assert build.calls == 2


async def test_requests_during_a_build_wait_for_it_instead_of_building_again() -> None:
    cache, build = ReadCache(max_age=3600), Builder()
    build.release.clear()
    waiting = [asyncio.create_task(cache.answer("status", 1, build)) for _ in range(20)]
    await asyncio.sleep(0.05)
    build.release.set()
    answers = await asyncio.gather(*waiting)
    assert build.calls == 1
    assert {answer.body for answer in answers} == {b"answer 1"}


async def test_a_failed_build_reaches_its_waiters_and_is_not_kept() -> None:
    cache = ReadCache(max_age=3600)
    gate = asyncio.Event()

    async def failing() -> bytes:
        await gate.wait()
        raise LookupError("no such taskset")

    first = asyncio.create_task(cache.answer("status", 1, failing))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.answer("status", 1, failing))
    await asyncio.sleep(0.01)
    gate.set()
    for task in (first, second):
        with pytest.raises(LookupError):
            await task
    build = Builder()
    assert (await cache.answer("status", 1, build)).body == b"answer 1"


async def test_the_oldest_answers_make_room() -> None:
    cache, build = ReadCache(max_age=3600, entries=2), Builder()
    for key in ("a", "b", "c"):
        await cache.answer(key, 1, build)
    await cache.answer("c", 1, build)
    await cache.answer("a", 1, build)
    assert build.calls == 4, "a was dropped for c; c was kept"


def test_if_none_match_is_read_as_http_says() -> None:
    etag = etag_of(b"{}")
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert matches(etag, etag)
    assert matches(f'"other", {etag}', etag)
    assert matches(f"W/{etag}", etag)
    assert matches("*", etag)
    assert not matches('"other"', etag)
    assert not matches(None, etag)
    assert not matches("", etag)
