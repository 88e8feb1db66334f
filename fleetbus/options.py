"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def timestamp(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected a time like 2026-11-24T10:00:00Z, got {text!r}"
        ) from e
    return value if value.tzinfo else value.replace(tzinfo=UTC)


MEMORY_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
MIN_NATS_MEMORY_LIMIT = 64 << 20
_MEMORY_SIZE = re.compile(r"(\d+)(B|KiB|MiB|GiB|TiB)?")


def memory_limit(text: str) -> str:
    """A Go memory limit (`GOMEMLIMIT` syntax, e.g. 768MiB or 2GiB), at least 64MiB."""
    match = _MEMORY_SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a size like 768MiB or 2GiB (units B, KiB, MiB, GiB, TiB), got {text!r}"
        )
    number, unit = match.groups()
    size = int(number) * MEMORY_UNITS[unit or "B"]
    if size < MIN_NATS_MEMORY_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text.strip()} is below the smallest limit nats-server is given, 64MiB"
        )
    return f"{number}{unit or 'B'}"
