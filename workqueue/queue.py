"""A work queue that serialises work per key, as client-go's workqueue does.

Watch events only say "this key may need work". A key queued many times is worked on once; a key
that changes while a worker holds it is queued again when that worker is done, never handed to
a second worker at the same time. So a reconciler never races itself over one Task, and a burst
of events costs one reconcile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}

    def add(self, key: K) -> None:
        """Queue `key` (once, however often it is added before a worker takes it)."""
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` seconds; an earlier pending timer for it wins."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        if existing is not None:
            if existing.when() <= loop.time() + delay:
                return
            existing.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        """The next key to work on; the caller must call `done(key)` when finished."""
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def pending(self) -> int:
        return self._queue.qsize()

    def __contains__(self, key: object) -> bool:
        """Whether `key` is queued, being worked on, coming back, or waiting on a timer."""
        return (
            key in self._queued
            or key in self._processing
            or key in self._dirty
            or key in self._timers
        )

    def busy(self) -> bool:
        return bool(self._queued or self._processing or self._dirty)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
