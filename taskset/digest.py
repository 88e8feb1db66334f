"""Canonical digests: the same content always hashes the same, whatever its key order or layout.

Canonical JSON here means: keys sorted, no insignificant whitespace, UTF-8, integers as integers.
YAML formatting, comments and key order therefore never change a digest; values always do.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import orjson


def canonical_json(value: Any) -> bytes:
    """Serialize plain data or msgspec Structs to canonical JSON bytes."""
    plain = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
    return orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)


def digest_of(value: Any) -> str:
    """`sha256:<hex>` over the canonical JSON of `value`."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
