"""A data dir from before operator mode starts as an operator-mode hub with its whole log.

The fixture is made the way such a data dir was made: the hub nats-server config of that time
(`tests/fixtures/datadir-config-accounts/hub.conf.tmpl`: accounts and password users in the
config file), the hub's streams created and events appended as its `hub` user. Then the
current `start_hub_nats` starts on it: the log must be all there, read as the hub's JWT user.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_urlsafe
from string import Template

import orjson
import pytest

from events.catalog import ClusterRegistered
from events.ids import new_event_id
from events.store import EventStore, connect
from events.streams import hub_streams
from fleetbus.datadir import DataDir
from fleetbus.errors import ServerFailed
from fleetbus.hub import connect_hub_store, start_hub_nats
from fleetbus.natsserver import NatsServer, free_port

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datadir-config-accounts"


async def old_data_dir(root: Path, clusters: list[str]) -> DataDir:
    """A hub data dir written by a hub with config-file accounts, holding `clusters`."""
    data = DataDir(root)
    data.create()
    secrets = {"hub_password": token_urlsafe(24), "sys_password": token_urlsafe(24)}
    (root / "secrets.json").write_bytes(orjson.dumps(secrets))
    port, monitor_port = free_port(), free_port()
    config = Template((FIXTURE / "hub.conf.tmpl").read_text()).substitute(
        server_name="fleetbus-hub",
        host="127.0.0.1",
        port=port,
        monitor_port=monitor_port,
        store_dir=data.store_dir,
        sys_password=secrets["sys_password"],
        hub_password=secrets["hub_password"],
        cluster_users="",
        leafnodes="",
    )
    data.nats_conf.write_text(config)
    server = NatsServer(
        config_path=data.nats_conf,
        client_url=f"nats://127.0.0.1:{port}",
        monitor_port=monitor_port,
        log_path=data.nats_log,
    )
    await asyncio.to_thread(server.start)
    try:
        nc = await connect(server.client_url, user="hub", password=secrets["hub_password"])
        store = EventStore(nc)
        try:
            await store.ensure_streams(hub_streams())
            for name in clusters:
                event = ClusterRegistered(
                    id=new_event_id(), occurred_at=datetime.now(UTC), actor="test", cluster=name
                )
                await store.append([event], expected=0)
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(server.stop)
    return data


async def test_an_old_data_dir_starts_in_operator_mode_with_its_whole_log(tmp_path: Path) -> None:
    clusters = [f"edge-{i}" for i in range(7)]
    data = await old_data_dir(tmp_path / "hub", clusters)
    assert (data.store_dir / "jetstream" / "FLEET").is_dir()
    assert not (data.root / "nats-auth.json").exists()

    server = await asyncio.to_thread(start_hub_nats, data, host="127.0.0.1", port=free_port())
    try:
        config = data.nats_conf.read_text()
        assert "password" not in config
        assert "operator:" in config
        assert not (data.store_dir / "jetstream" / "FLEET").exists()
        store = await connect_hub_store(data, server.client_url)
        try:
            read = [stored.event async for stored in store.read()]
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(server.stop)
    assert [event.cluster for event in read if isinstance(event, ClusterRegistered)] == clusters

    # A second start has nothing left to move and keeps the log.
    server = await asyncio.to_thread(start_hub_nats, data, host="127.0.0.1", port=free_port())
    try:
        store = await connect_hub_store(data, server.client_url)
        try:
            assert len([stored async for stored in store.read()]) == len(clusters)
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_store_holding_the_fleet_streams_twice_is_a_clear_error(tmp_path: Path) -> None:
    data = await old_data_dir(tmp_path / "hub", ["edge-1"])
    twin = data.store_dir / "jetstream" / data.nats_authority().public_key("FLEET")
    twin.mkdir()
    with pytest.raises(ServerFailed, match="twice"):
        await asyncio.to_thread(start_hub_nats, data, host="127.0.0.1", port=free_port())
    assert (data.store_dir / "jetstream" / "FLEET").is_dir(), "nothing moved"
