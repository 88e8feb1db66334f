"""`fleetbus api` and `fleetbus scheduler` on the command line: what an API process's data dir
needs, how it is prepared from the hub's, and several NATS URLs; bad input is one clear line.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetbus.api_replica import REPLICA_FILES, prepare_replica_dir
from fleetbus.cli import main
from fleetbus.commands.scheduler import hub_nats_urls
from fleetbus.datadir import DataDir
from fleetbus.edgehub import hub_pki
from fleetbus.errors import DataDirLocked, HubNotFound


def hub_data_dir(root: Path) -> DataDir:
    """A hub's data dir with what `fleetbus up` writes at its first start (no server)."""
    data = DataDir(root)
    data.create()
    data.service_credentials()
    hub_pki(data).ensure_ca(datetime.now(UTC))
    data.keyring()
    (root / "tokens.json").write_text('{"tokens": []}')
    (root / "admin.token").write_text("fbt_000000000000_secret\n")
    return data


def test_an_api_process_without_the_hubs_files_is_refused_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "api"
    code = main(["api", "--data-dir", str(empty), "--nats-url", "nats://127.0.0.1:1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("fleetbus: error: ")
    assert "lacks creds/hub.creds" in err
    assert "creds/sys.creds" in err
    assert "keys/" in err
    assert "--from-data-dir" in err
    assert "Traceback" not in err
    assert not empty.exists(), "nothing written"


def test_preparing_from_a_dir_that_is_not_a_hubs_copies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-hub").mkdir()
    argv = ["api", "--data-dir", str(tmp_path / "api"), "--from-data-dir"]
    code = main([*argv, str(tmp_path / "not-a-hub"), "--nats-url", "nats://127.0.0.1:1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not-a-hub is not a hub's data dir (no creds/hub.creds" in err
    assert not (tmp_path / "api").exists()


def test_preparing_copies_the_logins_and_keyring_privately_and_nothing_else(
    tmp_path: Path,
) -> None:
    hub = hub_data_dir(tmp_path / "hub")
    replica = DataDir(tmp_path / "api")
    copied = prepare_replica_dir(hub, replica)
    assert copied == [*REPLICA_FILES, "keys/"]
    for name in REPLICA_FILES:
        path = replica.root / name
        assert path.read_bytes() == (hub.root / name).read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(replica.keys_dir.stat().st_mode) == 0o700
    assert replica.keyring().scopes() == hub.keyring().scopes()
    for absent in (
        "tokens.json",
        "admin.token",
        "nats.conf",
        "projector.db",
        "hub.json",
        "pki/ca.key",
        "nats-auth.json",
    ):
        assert not (replica.root / absent).exists(), absent
    assert list((replica.root / "nats").iterdir()) == [], "never the hub's store"
    # Again, to take a rotated keyring: the copy is replaced whole.
    assert prepare_replica_dir(hub, replica) == copied
    with pytest.raises(HubNotFound, match="is the hub's own data dir"):
        prepare_replica_dir(hub, hub)


def test_an_api_process_running_on_the_dir_stops_a_new_copy(tmp_path: Path) -> None:
    hub = hub_data_dir(tmp_path / "hub")
    replica = DataDir(tmp_path / "api")
    prepare_replica_dir(hub, replica)
    with replica.lock(), pytest.raises(DataDirLocked, match="api"):
        prepare_replica_dir(hub, replica)


def test_the_scheduler_takes_every_nodes_nats_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = {"nats_url": "nats://a:4222", "nats_urls": ["nats://a:4222", "nats://b:4222"]}
    assert hub_nats_urls(info) == ["nats://a:4222", "nats://b:4222"]
    assert hub_nats_urls({"nats_url": "nats://a:4222"}) == ["nats://a:4222"]
    with pytest.raises(SystemExit) as exited:
        main(["scheduler", "--data-dir", str(tmp_path), "--nats-url", "nats://a:1,http://b:2"])
    assert exited.value.code == 2
    assert "expected nats://HOST:PORT or tls://HOST:PORT URLs separated by commas, got " in (
        capsys.readouterr().err
    )
