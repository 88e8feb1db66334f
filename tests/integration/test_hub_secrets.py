"""The CA and the NATS operator in JetStream, sealed (`fleetbus.hub_secrets`): what `fleetbus up`
stores there, an API process without them takes back, byte for byte; nobody without the
hub's keyring reads them.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from events.store import EventStore
from events.streams import HUB_SECRETS_STREAM
from fleetbus.datadir import DataDir
from fleetbus.edgehub import hub_pki
from fleetbus.errors import HubNotFound
from fleetbus.hub_secrets import HUB_SECRET_FILES, HubSecrets, secret_subject
from sealing.errors import SealingError
from sealing.keyring import Keyring


def hub_dir(root: Path) -> DataDir:
    data = DataDir(root)
    data.create()
    data.nats_authority()
    hub_pki(data).ensure_ca(datetime.now(UTC))
    return data


async def test_an_api_process_takes_the_ca_and_operator_the_hub_stored_sealed(
    event_store: EventStore, tmp_path: Path
) -> None:
    hub = hub_dir(tmp_path / "hub")
    keyring = hub.keyring()
    secrets = HubSecrets(event_store, keyring)
    await secrets.ensure_stream()
    assert await secrets.publish(hub.root) == list(HUB_SECRET_FILES)
    assert await secrets.publish(hub.root) == [], "unchanged: not stored again"
    info = await event_store.stream_info(HUB_SECRETS_STREAM)
    assert info["state"]["messages"] == len(HUB_SECRET_FILES)

    key_pem = (hub.root / "pki" / "ca.key").read_bytes()
    raw = await event_store.api_request(
        f"STREAM.MSG.GET.{HUB_SECRETS_STREAM}", {"last_by_subj": secret_subject("pki/ca.key")}
    )
    assert b"PRIVATE KEY" not in str(raw).encode()
    assert key_pem.split(b"\n")[1].decode() not in str(raw), "sealed, not the PEM"

    replica = tmp_path / "api"
    assert await HubSecrets(event_store, keyring).restore(replica) == list(HUB_SECRET_FILES)
    for name in HUB_SECRET_FILES:
        assert (replica / name).read_bytes() == (hub.root / name).read_bytes()
        assert stat.S_IMODE((replica / name).stat().st_mode) == 0o600
    assert await HubSecrets(event_store, keyring).restore(replica) == [], "nothing missing"


async def test_without_the_hubs_keyring_the_stored_secrets_do_not_open(
    event_store: EventStore, tmp_path: Path
) -> None:
    hub = hub_dir(tmp_path / "hub")
    secrets = HubSecrets(event_store, hub.keyring())
    await secrets.ensure_stream()
    await secrets.publish(hub.root)
    stranger = HubSecrets(event_store, Keyring.open(tmp_path / "other-keys"))
    with pytest.raises(SealingError):
        await stranger.restore(tmp_path / "api")
    assert not (tmp_path / "api" / "pki" / "ca.key").exists()


async def test_a_hub_that_never_stored_them_is_a_clear_error_and_nothing_written(
    event_store: EventStore, tmp_path: Path
) -> None:
    secrets = HubSecrets(event_store, Keyring.open(tmp_path / "keys"))
    await secrets.ensure_stream()
    with pytest.raises(HubNotFound, match=r"holds no pki/ca\.crt .*start `fleetbus up`"):
        await secrets.restore(tmp_path / "api")
    assert not (tmp_path / "api").exists()


async def test_every_process_signs_stream_tickets_with_one_key_made_once(
    event_store: EventStore, tmp_path: Path
) -> None:
    keyring = Keyring.open(tmp_path / "keys")
    first = HubSecrets(event_store, keyring)
    await first.ensure_stream()
    key = await first.ticket_key()
    assert len(key) == 32
    assert await HubSecrets(event_store, keyring).ticket_key() == key
    raw = await event_store.api_request(
        f"STREAM.MSG.GET.{HUB_SECRETS_STREAM}",
        {"last_by_subj": secret_subject("stream-ticket-key")},
    )
    assert raw["message"]["seq"] > 0
    assert key.hex() not in str(raw)
