"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from events.retention import RetentionInvalid, RetentionPolicy


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def nats_urls(text: str) -> tuple[str, ...]:
    """`nats://HOST:PORT` or `tls://HOST:PORT` URLs separated by commas: the nodes of a NATS
    cluster, tried in turn."""
    urls = tuple(url.strip() for url in text.split(",") if url.strip())
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("nats", "tls") or not rest:
            raise argparse.ArgumentTypeError(
                f"expected nats://HOST:PORT or tls://HOST:PORT URLs separated by commas, "
                f"got {url!r}"
            )
    if not urls:
        raise argparse.ArgumentTypeError("expected at least one NATS URL")
    return urls


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


def byte_size(text: str) -> int:
    """A size in bytes: a whole number, or one with a unit (KiB, MiB, GiB, TiB), 0 or more."""
    match = _MEMORY_SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a size like 500MiB or 2GiB (units B, KiB, MiB, GiB, TiB), got {text!r}"
        )
    number, unit = match.groups()
    return int(number) * MEMORY_UNITS[unit or "B"]


MIN_LEAF_MEMORY_LIMIT = 16 << 20
MIN_LEAF_FILE_STORE = 64 << 20


def _size(text: str) -> tuple[str, int]:
    match = _MEMORY_SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a size like 32MiB or 2GiB (units B, KiB, MiB, GiB, TiB), got {text!r}"
        )
    number, unit = match.groups()
    return f"{number}{unit or 'B'}", int(number) * MEMORY_UNITS[unit or "B"]


def leaf_memory_limit(text: str) -> str:
    """The edge leaf's soft memory limit (`GOMEMLIMIT` syntax), at least 16MiB, or `off`."""
    if text.strip() == "off":
        return ""
    written, size = _size(text)
    if size < MIN_LEAF_MEMORY_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{written} is below the smallest limit the leaf nats-server is given, 16MiB "
            "(it needs about that much idle)"
        )
    return written


def leaf_file_store(text: str) -> int:
    """The edge leaf's JetStream file store limit in bytes (`1536MiB`, `2GiB`), at least 64MiB."""
    written, size = _size(text)
    if size < MIN_LEAF_FILE_STORE:
        raise argparse.ArgumentTypeError(
            f"{written} is below 64MiB: too small for the outbox and the desired-state mirror"
        )
    return size


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], refused before the command runs.

    argparse names the option in front of the message, so a refusal reads
    `argument --from-seq: must be a whole number >= 1, got -5`.
    """
    rule = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"must be a whole number {rule}, got {text!r}") from e
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {rule}, got {value}")
        return value

    parse.__name__ = "whole number"  # argparse's fallback wording for other failures
    return parse


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    return whole_number(1, 65535)(text)


def positive_seconds(text: str) -> float:
    """A duration in seconds, above zero and finite (`30`, `2.5`, `2.5s`)."""
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0, like 30 or 2.5, got {text!r}"
        ) from e
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


_DURATION = re.compile(r"(\d+)(s|m|h|d)?")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> int:
    """A duration in whole seconds: `3600`, `90s`, `30m`, `12h`, `90d`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            "must be a duration like 90d, 12h, 30m or 45s (plain numbers are seconds), "
            f"got {text!r}"
        )
    number, unit = match.groups()
    return int(number) * DURATION_UNITS[unit or "s"]


def retention_policy(text: str) -> RetentionPolicy:
    """`age=90d,events=5000000,bytes=20GiB` (any subset): the EVENTS retention window."""
    try:
        return RetentionPolicy.parse(text)
    except RetentionInvalid as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def archive_interval(text: str) -> float:
    """Seconds between two archiving passes: 1 to 86400 (`60`, `300s`)."""
    value = positive_seconds(text)
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be 1 to 86400 seconds, got {text}")
    return value


def add_api_tls_options(parser: argparse.ArgumentParser) -> None:
    """`--tls-cert`/`--tls-key`/`--tls`: how a hub process serves its API over HTTPS."""
    tls = parser.add_argument_group("API TLS")
    tls.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve the API over HTTPS only, with this PEM certificate",
    )
    tls.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="its PEM private key"
    )
    tls.add_argument(
        "--tls",
        dest="tls_issue",
        action="store_true",
        help="serve the API over HTTPS only, with a certificate from the hub CA (its SHA-256 "
        "fingerprint is printed; CLIs pin it with --tls-fingerprint or trust pki/ca.crt)",
    )
