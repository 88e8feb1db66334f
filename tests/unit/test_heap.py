"""Freed memory goes back to the system when the edge asks the C library to trim its heap."""

from __future__ import annotations

from pathlib import Path

from fleetbus.heap import return_freed_memory


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_freed_after_a_burst_is_returned_by_a_trim() -> None:
    # Strings over 512 bytes come from malloc, not from CPython's own arenas: freed, their
    # pages stay with the process until the heap is trimmed.
    burst = [("k" * 600) + str(i) for i in range(40_000)]
    peak = rss_kib()
    del burst
    freed = rss_kib()

    assert return_freed_memory()

    trimmed = rss_kib()
    assert freed > peak - 8 * 1024, "freeing alone keeps most of the burst resident"
    assert trimmed < freed - 8 * 1024, (peak, freed, trimmed)
