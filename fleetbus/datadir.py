"""The hub's data dir: where `fleetbus up` keeps its store, config, secrets, and how to find it.

Layout of `D` (default `./.fleetbus`):
  nats/             JetStream storage
  nats.conf         rendered nats-server config (0600: it holds credentials)
  nats.log          nats-server log
  secrets.json      generated NATS passwords of the hub's own services (0600)
  hub.json          how to reach the running hub (written at start, removed at stop)
  hub.lock          held while a hub runs, so two hubs never share one data dir
  keys/             the keyring: the key-encryption key and the wrapped data keys that seal
                    secrets at rest (0700, files 0600; see `sealing.keyring`)
"""

from __future__ import annotations

import fcntl
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from access.private_files import write_private
from fleetbus.errors import DataDirLocked, HubNotFound
from sealing.keyring import Keyring

DEFAULT_DATA_DIR = Path(".fleetbus")


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def store_dir(self) -> Path:
        return self.root / "nats"

    @property
    def nats_conf(self) -> Path:
        return self.root / "nats.conf"

    @property
    def nats_log(self) -> Path:
        return self.root / "nats.log"

    @property
    def hub_json(self) -> Path:
        return self.root / "hub.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    def keyring(self) -> Keyring:
        """The hub's keyring, created with a first key-encryption key on first use."""
        return Keyring.open(self.keys_dir)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.store_dir.mkdir(exist_ok=True)

    def secrets(self) -> dict[str, str]:
        """The hub's generated service passwords, created on first use."""
        path = self.root / "secrets.json"
        if path.exists():
            loaded: dict[str, str] = orjson.loads(path.read_bytes())
            return loaded
        generated = {
            "hub_password": secrets.token_urlsafe(24),
            "sys_password": secrets.token_urlsafe(24),
        }
        write_private(path, orjson.dumps(generated))
        return generated

    def lock(self) -> IO[bytes]:
        """Hold the data dir for one hub; raises `DataDirLocked` if another hub has it."""
        handle = (self.root / "hub.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            handle.close()
            raise DataDirLocked(f"another hub is running on {self.root} (hub.lock is held)") from e
        return handle

    def write_hub_info(self, info: dict[str, Any]) -> None:
        write_private(self.hub_json, orjson.dumps(info, option=orjson.OPT_INDENT_2))

    def read_hub_info(self) -> dict[str, Any]:
        try:
            info: dict[str, Any] = orjson.loads(self.hub_json.read_bytes())
        except FileNotFoundError as e:
            raise HubNotFound(
                f"no running hub found in {self.root}: start one with `fleetbus up`, "
                "or pass --server/--data-dir"
            ) from e
        return info
