"""Account JWTs pushed to the nats-based resolver, and seen to arrive on every server.

An account changes (a new project, new limits, a revoked cluster) by sending its new JWT on
`$SYS.REQ.CLAIMS.UPDATE` as the system account's user: the server that takes it stores it in
its `full` resolver and passes it to every other server of the cluster, which apply it at once
(revoked users' connections, leaf nodes among them, are closed by each server). A resolver
takes whatever JWT it is sent, even one older than it holds, so every JWT fleetbus signs is
issued later than the last (`NatsAuthority.next_issued_at`). `push` then
asks every server (`$SYS.REQ.SERVER.PING.ACCOUNTZ`) until each one answers with the JWT just
pushed, so "effective" means effective on every server that is up; a server that was down
fetches the newest JWTs from the others when it rejoins.

This module speaks NATS on a short-lived connection of its own, as the system user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient

from access.errors import AccessNotEffective
from access.nats_accounts import NatsAuthority, ProjectLimits
from access.nats_jwt import decode
from events.store import connect

log = logging.getLogger(__name__)

CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"
PING_ACCOUNTZ = "$SYS.REQ.SERVER.PING.ACCOUNTZ"
PING_STATSZ = "$SYS.REQ.SERVER.PING.STATSZ"
QUIET_S = 0.3
"""A ping's answers are gathered until no server has answered for this long."""


async def gather_replies(
    nc: NatsClient, subject: str, body: bytes, *, within: float = 3.0
) -> list[dict[str, Any]]:
    """Every server's answer to a `$SYS.REQ.SERVER.PING.…` request."""
    return [orjson.loads(data) for data in await gather_raw(nc, subject, body, within=within)]


async def gather_raw(
    nc: NatsClient, subject: str, body: bytes, *, within: float = 3.0
) -> list[bytes]:
    """Every answer to a request many servers answer, until they fall quiet."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    answers: list[bytes] = []
    try:
        await nc.publish(subject, body, reply=inbox)
        deadline = time.monotonic() + within
        wait = within
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=min(wait, left))
            except (TimeoutError, nats.errors.TimeoutError):
                break
            answers.append(msg.data)
            wait = QUIET_S
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return answers


class AccountPublisher:
    """Pushes account JWTs into a hub's resolver (one server or a cluster) as the system user."""

    def __init__(self, urls: Sequence[str], system_credentials: Path) -> None:
        self.urls = list(urls)
        self.system_credentials = system_credentials

    async def _connect(self) -> NatsClient:
        return await connect(
            self.urls,
            name="fleetbus-account-push",
            credentials=self.system_credentials,
            max_reconnect_attempts=3,
        )

    async def push(self, jwts: Sequence[str], *, within: float = 15.0) -> int:
        """Push `jwts`; return once every server that is up holds each one (their number)."""
        nc = await self._connect()
        try:
            for token in jwts:
                await self._update(nc, token)
            return await self._wait_everywhere(nc, jwts, within)
        finally:
            await nc.close()

    async def _update(self, nc: NatsClient, token: str) -> None:
        account = decode(token).get("sub", "?")
        try:
            reply = await nc.request(CLAIMS_UPDATE, token.encode(), timeout=5.0)
        except (nats.errors.Error, TimeoutError) as e:
            raise AccessNotEffective(f"could not push account {account}: {e}") from e
        answer = orjson.loads(reply.data)
        data = answer.get("data") or {}
        error = answer.get("error") or {}
        if error or int(data.get("code", 0)) != 200:
            raise AccessNotEffective(
                f"the NATS resolver refused account {account}: "
                f"{error.get('description') or data.get('message') or answer}"
            )

    async def _wait_everywhere(self, nc: NatsClient, jwts: Sequence[str], within: float) -> int:
        deadline = time.monotonic() + within
        servers = len(await gather_replies(nc, PING_STATSZ, b"{}"))
        while True:
            behind: list[str] = []
            for token in jwts:
                account = str(decode(token)["sub"])
                holding = await self._holding(nc, account, token)
                if holding < max(servers, 1):
                    behind.append(f"{account} ({holding}/{servers} servers)")
            if not behind:
                return servers
            if time.monotonic() > deadline:
                raise AccessNotEffective(
                    f"account updates did not reach every NATS server within {within:.0f}s: "
                    + ", ".join(behind)
                )
            await asyncio.sleep(0.1)

    async def _holding(self, nc: NatsClient, account: str, token: str) -> int:
        """How many servers hold `token` for `account`: in their resolver (every `full`
        resolver answers a lookup), or applied to the account they have in memory."""
        looked_up = await gather_raw(nc, f"$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP", b"")
        in_resolver = sum(1 for answer in looked_up if answer == token.encode())
        answers = await gather_replies(nc, PING_ACCOUNTZ, orjson.dumps({"account": account}))
        applied = sum(
            1
            for a in answers
            if ((a.get("data") or {}).get("account_detail") or {}).get("jwt") == token
        )
        return max(in_resolver, applied)

    async def lookup(self, account: str) -> str | None:
        """The JWT of `account` (its public key) the servers' resolvers hold: None when one
        that answers holds another (or none)."""
        nc = await self._connect()
        try:
            answers = await gather_raw(nc, f"$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP", b"")
        finally:
            await nc.close()
        held = {answer.decode(errors="replace").strip() for answer in answers}
        if len(held) != 1:
            return None
        token = held.pop()
        return token or None

    async def servers(self) -> list[dict[str, Any]]:
        """Every server's `STATSZ` answer (name, id, connections...)."""
        nc = await self._connect()
        try:
            return [a.get("server") or {} for a in await gather_replies(nc, PING_STATSZ, b"{}")]
        finally:
            await nc.close()

    async def ping(self, subject: str, body: object = None) -> list[dict[str, Any]]:
        """Every server's answer to `$SYS.REQ.SERVER.PING.<subject>` (e.g. `LEAFZ`, `VARZ`)."""
        nc = await self._connect()
        try:
            return await gather_replies(
                nc, f"$SYS.REQ.SERVER.PING.{subject}", orjson.dumps(body or {})
            )
        finally:
            await nc.close()


async def create_project_account(
    authority: NatsAuthority,
    publisher: AccountPublisher,
    project: str,
    limits: ProjectLimits,
    *,
    revocations: Mapping[str, int] | None = None,
) -> str:
    """Create a project's NATS account (or change its limits) and make it effective on every
    server of the hub; its public key. The default project's account is FLEET.

    An account JWT carries the account's revoked user keys: pass the current ones (for FLEET,
    `ClusterAccessService.revocations`), or a revoked user would be let in again."""
    name = authority.ensure_project_account(project, limits)
    await publisher.push([authority.account_jwt(name, revocations=revocations)])
    return authority.public_key(name)
