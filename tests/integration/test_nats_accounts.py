"""Accounts per project on the hub's nats-server in operator mode, made by pushing JWTs.

A real nats-server (the hub's config: operator, nats-based resolver) with accounts created by
`access.account_push.create_project_account`: two projects' users cannot see each other's
streams or subjects, each project's JetStream limits hold, and a revoked user is dropped and
refused without any change to the server's config.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials
from nats.aio.msg import Msg

from access.account_push import AccountPublisher, create_project_account
from access.errors import AccessError
from access.nats_accounts import FLEET_ACCOUNT, NatsAuthority, ProjectLimits, credentials_jwt
from access.nats_jwt import decode, new_nkey
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.integration.edge_harness import edge_hub


def publisher_of(hub_nats: HubNats) -> AccountPublisher:
    return AccountPublisher([hub_nats.url], hub_nats.data.system_credentials)


async def login(hub_nats: HubNats, authority: NatsAuthority, account: str, name: str) -> NatsClient:
    creds = authority.user_credentials(account, new_nkey("user"), name)
    return await nats.connect(hub_nats.url, user_credentials=RawCredentials(creds))


async def test_two_project_accounts_cannot_see_each_other_streams_or_subjects(
    hub_nats: HubNats,
) -> None:
    authority = hub_nats.data.nats_authority()
    publisher = publisher_of(hub_nats)
    limits = ProjectLimits(storage_bytes=1 << 20, memory_bytes=0, streams=2, consumers=4)
    a_key = await create_project_account(authority, publisher, "team-a", limits)
    b_key = await create_project_account(authority, publisher, "team-b", limits)
    assert a_key != b_key != authority.public_key(FLEET_ACCOUNT)
    a = await login(hub_nats, authority, "project-team-a", "alice")
    b = await login(hub_nats, authority, "project-team-b", "bob")
    try:
        ja, jb = a.jetstream(), b.jetstream()
        await ja.add_stream(name="ORDERS", subjects=["orders.>"])
        seen_by_b: list[bytes] = []

        async def collect(msg: Msg) -> None:
            seen_by_b.append(msg.data)

        await b.subscribe("orders.>", cb=collect)
        await b.flush()
        await ja.publish("orders.1", b"from a")
        await b.publish("orders.2", b"from b")
        await b.flush()
        assert (await ja.stream_info("ORDERS")).state.messages == 1
        assert [s.config.name for s in await jb.streams_info()] == []
        with pytest.raises(nats.js.errors.NotFoundError):
            await jb.stream_info("ORDERS")
        await a.flush()
        assert seen_by_b == [b"from b"]
        # B's own stream on the same subjects is B's alone.
        await jb.add_stream(name="ORDERS", subjects=["orders.>"])
        assert (await jb.stream_info("ORDERS")).state.messages == 0
        # Each project's limits: two streams, storage on file only.
        await ja.add_stream(name="SECOND", subjects=["second.>"])
        with pytest.raises(nats.js.errors.APIError, match="maximum number of streams"):
            await ja.add_stream(name="THIRD", subjects=["third.>"])
        account_info = await ja.account_info()
        assert account_info.limits.max_streams == 2
        assert account_info.limits.max_storage == 1 << 20
    finally:
        await a.close()
        await b.close()


async def test_a_revoked_user_is_dropped_and_refused_without_a_config_change(
    hub_nats: HubNats,
) -> None:
    authority = hub_nats.data.nats_authority()
    publisher = publisher_of(hub_nats)
    await create_project_account(authority, publisher, "team-a", ProjectLimits())
    user = new_nkey("user")
    creds = authority.user_credentials("project-team-a", user, "alice")
    config_before = hub_nats.server.config_path.read_bytes()
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await nats.connect(
        hub_nats.url,
        user_credentials=RawCredentials(creds),
        closed_cb=on_closed,
        max_reconnect_attempts=1,
    )
    try:
        revoked_at = int(decode(creds.split("\n")[1])["iat"])
        token = authority.account_jwt("project-team-a", revocations={user.public: revoked_at})
        servers = await publisher.push([token])
        assert servers == 1
        await eventually(closed.is_set, "the revoked user's connection closed", within=60)
    finally:
        await nc.close()
    refused = NatsClient()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await refused.connect(
                hub_nats.url,
                user_credentials=RawCredentials(creds),
                max_reconnect_attempts=0,
                allow_reconnect=False,
            )
    finally:
        await refused.close()
    assert hub_nats.server.config_path.read_bytes() == config_before


def test_project_names_and_limits_are_checked(tmp_path: Path) -> None:
    authority = NatsAuthority.open(tmp_path)
    with pytest.raises(AccessError, match="streams"):
        authority.ensure_project_account("team-a", ProjectLimits(streams=-5))
    with pytest.raises(Exception, match="project"):
        authority.ensure_project_account("Not A Name", ProjectLimits())
    assert authority.ensure_project_account("default", ProjectLimits()) == FLEET_ACCOUNT
    # Created accounts survive a reopen; seeds are owner-only.
    name = authority.ensure_project_account("team-a", ProjectLimits(streams=3))
    reopened = NatsAuthority.open(tmp_path)
    assert reopened.public_key(name) == authority.public_key(name)
    assert reopened.limits[name].streams == 3
    assert (tmp_path / "nats-auth.json").stat().st_mode & 0o077 == 0


async def test_the_default_project_account_keeps_its_revocations_when_its_limits_change(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        bundle = await hub.register("alpha")
        revoked_key = decode(credentials_jwt(bundle.creds_file.read_text()))["sub"]
        await hub.deregister("alpha")
        access = hub.services.access
        assert revoked_key in access.revocations
        key = await access.ensure_project_account("default", ProjectLimits(streams=40))
        authority = hub.data.nats_authority()
        assert key == authority.public_key(FLEET_ACCOUNT)
        nc = await nats.connect(hub.server.client_url, user_credentials=str(hub.credentials))
        try:
            info = await nc.jetstream().account_info()
            assert info.limits.max_streams == 40
        finally:
            await nc.close()
        sys_nc = await nats.connect(
            hub.server.client_url, user_credentials=str(hub.data.system_credentials)
        )
        try:
            reply = await sys_nc.request(f"$SYS.REQ.ACCOUNT.{key}.CLAIMS.LOOKUP", b"", timeout=5)
        finally:
            await sys_nc.close()
        assert revoked_key in decode(reply.data.decode())["nats"]["revocations"]
        # A project of its own is another account.
        other = await access.ensure_project_account("team-a", ProjectLimits(streams=1))
        assert other not in (key, authority.public_key("SYS"))
