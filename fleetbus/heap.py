"""Hand the memory a long-running edge process has freed back to the system, now and then.

CPython frees small objects into its own arenas and everything larger (dict tables, the text
of an apiserver's list answer, a decoded desired state) through the C library's malloc, which
keeps freed pages for reuse instead of returning them. After a burst (a thousand objects
applied, a full re-list) the process's resident size stays at its peak although the memory is
free. glibc's `malloc_trim(0)` returns those pages; it costs about a millisecond and changes
no object. Where the C library has no `malloc_trim` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_EVERY_S = 30.0


def _malloc_trim() -> Callable[[], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> int:
        return int(trim(0))

    return call


def return_freed_memory() -> bool:
    """Return the C heap's free pages to the system; False where that cannot be done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim()
    return True


async def keep_returning_freed_memory(every_s: float = TRIM_EVERY_S) -> None:
    """Every `every_s` seconds, return freed memory (until cancelled)."""
    trim = _malloc_trim()
    if trim is None:
        log.debug("the C library has no malloc_trim: freed memory stays with the process")
        return
    while True:
        await asyncio.sleep(every_s)
        trim()
