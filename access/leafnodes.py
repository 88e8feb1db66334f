"""The hub's nats-server as the access component drives it: reloads, leaf connections, kicks.

nats-server re-checks plain clients against the users on reload, but not accepted leaf
connections, so after a revocation the hub finds the leaf connections no current certificate
would admit (its monitor endpoint's `/leafz`) and drops them with a system-account `KICK`
request. A leaf names itself (`edge-<cluster>`), so on a revocation the others must prove their
name: only the leaf whose certificate is that cluster's can answer on `$JS.edge-<cluster>.API`.

This is the one module of `access` that speaks NATS; it opens its own short-lived
connections (system account for kicks, the hub's user for probes) rather than borrowing the
event store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import nats.errors
import orjson

from access.errors import AccessNotEffective
from access.ports import HubServer
from events.store import connect

log = logging.getLogger(__name__)


def leaf_connections(monitor_port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/leafz", timeout=2.0) as reply:
        leafz = orjson.loads(reply.read())
    return list(leafz.get("leafs") or [])


def hub_server_id(monitor_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=2.0) as reply:
        return str(orjson.loads(reply.read())["server_id"])


def config_load_time(monitor_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=2.0) as reply:
        varz = orjson.loads(reply.read())
    return str(varz.get("config_load_time", ""))


def reload_and_wait(server: HubServer, timeout: float = 10.0) -> None:
    """Reload the server's config and wait until it has taken effect (blocking)."""
    try:
        before = config_load_time(server.monitor_port)
    except (urllib.error.URLError, OSError) as e:
        raise AccessNotEffective(f"cannot read the hub's nats-server state: {e}") from e
    server.reload()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if config_load_time(server.monitor_port) != before:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise AccessNotEffective(
        f"the hub's nats-server did not reload its config within {timeout:.0f}s: "
        f"{server.log_tail()}"
    )


async def kick_leafs(
    server: HubServer, sys_password: str, targets: Sequence[tuple[int, str]]
) -> None:
    """Drop the leaf connections `(connection id, name)` with the system account's KICK."""
    server_id = await asyncio.to_thread(hub_server_id, server.monitor_port)
    nc = await connect(
        server.client_url,
        name="fleetbus-hub-access",
        user="sys",
        password=sys_password,
        max_reconnect_attempts=0,
    )
    try:
        for cid, name in targets:
            try:
                await nc.request(
                    f"$SYS.REQ.SERVER.{server_id}.KICK",
                    orjson.dumps({"cid": cid}),
                    timeout=5.0,
                )
            except (nats.errors.Error, TimeoutError) as e:
                raise AccessNotEffective(
                    f"could not drop the leaf connection of {name}: {e}"
                ) from e
            log.info("dropped leaf connection %s (%s)", cid, name)
    finally:
        await nc.close()


async def leafs_answering_as_named(
    server: HubServer, hub_password: str, leafs: Sequence[str]
) -> list[bool]:
    """For each leaf name `edge-<cluster>`: whether that leaf serves that cluster's JetStream
    domain. The reply subject is under `$JSC.R.`, the only reply prefix a leaf may publish to."""
    if not leafs:
        return []
    nc = await connect(
        server.client_url,
        name="fleetbus-hub-access-probe",
        user="hub",
        password=hub_password,
        max_reconnect_attempts=0,
    )

    async def answers(leaf_name: str) -> bool:
        reply = f"$JSC.R.{secrets.token_hex(8)}"
        try:
            sub = await nc.subscribe(reply, max_msgs=1)
            try:
                await nc.publish(f"$JS.{leaf_name}.API.INFO", b"", reply=reply)
                answer = await sub.next_msg(timeout=2.0)
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        except (nats.errors.Error, TimeoutError):
            return False
        # Nobody subscribed: the server itself answers with status 503.
        return (answer.headers or {}).get("Status") != "503"

    try:
        return list(await asyncio.gather(*(answers(name) for name in leafs)))
    finally:
        await nc.close()
