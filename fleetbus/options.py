"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
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
