"""Event ids that sort by creation time: UUIDv7 (RFC 9562), as text."""

from __future__ import annotations

import os
import time
import uuid


def new_event_id(now_ms: int | None = None) -> str:
    """A UUIDv7: 48 bits of Unix milliseconds, then random bits; lexically sortable by time."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 68 & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def event_id_time_ms(event_id: str) -> int:
    return uuid.UUID(event_id).int >> 80
