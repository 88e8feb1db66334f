"""The connection to NATS: one client with a fast header parser, and the one retrying request.

Every fleetbus process connects through `connect` (reconnecting forever by default, failed
attempts kept out of a CLI user's terminal) and gets a client whose header parser costs one
regex pass per message: replays read every message with its headers, and nats-py's own parser
was most of the cost of a replay.

`TRANSIENT_ERRORS` is the one list of transport errors worth retrying, and `retrying` the one
tenacity policy for it (bounded attempts, exponential pauses from 0.1 s to 2 s); `request` is
the one request-reply with that policy, used by every JetStream adapter in fleetbus. Retrying
an append is safe: the server recognises the `Nats-Msg-Id` of a message it already stored and
answers `duplicate` instead of storing it twice. Domain errors and conflicts are never retried.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials
from nats.aio.msg import Msg
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from events.errors import EventLogUnavailable

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
)
"""Transport errors a retry can cure: no answer yet, no responder during a leader election, a
reconnect in progress, JetStream briefly unavailable."""


def retrying(attempts: int) -> AsyncRetrying:
    """The retry policy for `TRANSIENT_ERRORS`: `attempts` tries with exponential pauses."""
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        reraise=True,
    )


async def request(
    nc: NatsClient,
    subject: str,
    payload: bytes,
    headers: dict[str, str] | None = None,
    *,
    reply_within: float,
    attempts: int = 5,
) -> Msg:
    """A request with bounded retries on transient transport errors only; every failure comes
    out as `EventLogUnavailable`."""
    try:
        async for attempt in retrying(attempts):
            with attempt:
                return await nc.request(subject, payload, timeout=reply_within, headers=headers)
    except TRANSIENT_ERRORS as e:
        raise EventLogUnavailable(f"no answer from JetStream for {subject}: {e!r}") from e
    except nats.errors.Error as e:
        raise EventLogUnavailable(f"request on {subject} failed: {e}") from e
    raise AssertionError("unreachable: tenacity either returns or raises")


# --- the client -----------------------------------------------------------------------------


class FleetbusClient(NatsClient):
    """nats-py's client with a header parser that costs one regex pass per message.

    Replays read every message with its headers (a direct get carries six of its own), and
    nats-py's line-by-line parser, which scans each name for whitespace one character at a
    time, was most of the cost of a replay. Well-formed headers give the same dict: names that
    are not tokens are skipped, values are stripped and decoded as UTF-8 with replacement.
    """

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        return parse_header_lines(raw)


_ANY_SPACE = re.compile(r"\s")
_HEADER_SPACE = " \t\r\n\x0b\x0c"
"""What `bytes.strip()` strips: nats-py's parser strips exactly these around names and values."""


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """The header block of a NATS message (`Name: value` lines) as a dict.

    Names must be ASCII without whitespace; other lines are skipped.
    """
    headers: dict[str, str] = {}
    names = _HEADER_NAMES
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        raw_name, colon, value = line.partition(":")
        if colon:
            name = names[raw_name] if raw_name in names else _header_name(raw_name)
            if name is not None:
                headers[name] = value.strip(_HEADER_SPACE)
    return headers


_HEADER_NAMES: dict[str, str | None] = {}
"""Header names as written on the wire → the name, or None for an invalid one. The same few
names come with every message; the cache stops growing at 1,024 entries."""


def _header_name(raw_name: str) -> str | None:
    name = raw_name.strip(_HEADER_SPACE)
    valid = name if name.isascii() and _ANY_SPACE.search(name) is None else None
    if len(_HEADER_NAMES) < 1024:
        _HEADER_NAMES[raw_name] = valid
    return valid


async def connect(
    url: str | list[str],
    *,
    name: str = "fleetbus",
    user: str | None = None,
    password: str | None = None,
    credentials: Path | str | None = None,
    tls: Any = None,
    inbox_prefix: str | None = None,
    max_reconnect_attempts: int = -1,
    connect_timeout: float = 5.0,
    in_order: bool = False,
) -> NatsClient:
    """Connect to NATS for a long-lived fleetbus process (reconnects forever by default).

    `credentials` is a `.creds` file (a user JWT and its nkey seed: how every fleetbus user
    logs in to a hub in operator mode), as a path or as its text. Of several URLs one is
    picked at random, and again at each reconnect; `in_order` tries them in the order given
    instead (the first while it answers, then the next), so a caller decides which node a
    connection lands on and where it goes when that node is lost."""
    options: dict[str, Any] = {
        "servers": url if isinstance(url, list) else [url],
        "name": name,
        "max_reconnect_attempts": max_reconnect_attempts,
        "reconnect_time_wait": 0.5,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "error_cb": _connection_trouble,
        "dont_randomize": in_order,
    }
    if user is not None:
        options["user"] = user
        options["password"] = password
    if isinstance(credentials, Path):
        options["user_credentials"] = str(credentials)
    elif credentials is not None:
        options["user_credentials"] = RawCredentials(credentials)
    if tls is not None:
        options["tls"] = tls
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    client = FleetbusClient()
    try:
        await client.connect(**options)
    except (TimeoutError, nats.errors.Error, OSError) as e:
        raise EventLogUnavailable(f"cannot connect to NATS at {url}: {e}") from e
    return client


async def _connection_trouble(error: Exception) -> None:
    """nats-py reports every failed (re)connect attempt here. The reconnect logic handles them
    and `connect` raises one clear error when it gives up, so they are no user's business: its
    default logs each with a traceback, which would end up on a CLI user's terminal."""
    log.debug("NATS connection trouble: %s", error)
