"""The hub's data dir: where `fleetbus up` keeps its store, config, secrets, and how to find it.

Layout of `D` (default `./.fleetbus`):
  nats/             JetStream storage
  nats.conf         rendered nats-server config (0600: it holds credentials)
  nats.log          nats-server log
  nats-auth.json    the NATS operator and account seeds (0600, see `access.nats_accounts`)
  nats-resolver/    the embedded nats-server's account JWTs (its `full` resolver)
  creds/            `.creds` of the hub's own NATS users: hub.creds (FLEET), sys.creds (0600)
  secrets.json      in data dirs from before operator mode only: their NATS passwords (unused)
  hub.json          how to reach the running hub (written at start, removed at stop)
  hub.lock          held while a hub runs, so two hubs never share one data dir
  keys/             the keyring: the key-encryption key and the wrapped data keys that seal
                    secrets at rest (0700, files 0600; see `sealing.keyring`)
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from access.nats_accounts import HUB_USER, SYS_USER, NatsAuthority, ServiceCredentials
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

    @property
    def resolver_dir(self) -> Path:
        return self.root / "nats-resolver"

    @property
    def credentials_dir(self) -> Path:
        return self.root / "creds"

    def nats_authority(self) -> NatsAuthority:
        """The hub's NATS operator and accounts, created on first use."""
        self.root.mkdir(parents=True, exist_ok=True)
        return NatsAuthority.open(self.root)

    def service_credentials(self) -> ServiceCredentials:
        """The `.creds` files of the hub's own NATS users (written on first use)."""
        hub = self.credentials_dir / f"{HUB_USER}.creds"
        system = self.credentials_dir / f"{SYS_USER}.creds"
        if hub.is_file() and system.is_file():
            return ServiceCredentials(hub=hub, system=system)
        return self.nats_authority().service_credentials(self.credentials_dir)

    @property
    def hub_credentials(self) -> Path:
        """How the hub's services (and the CLI on this machine) log in to its NATS."""
        return self.service_credentials().hub

    def existing_hub_credentials(self) -> Path:
        """The hub user's `.creds` for a process that joins a hub (the CLI, `fleetbus
        scheduler`): never created here, since a new operator would not be the hub's."""
        path = self.credentials_dir / f"{HUB_USER}.creds"
        if not path.is_file():
            raise HubNotFound(
                f"{path} is missing: run this next to the hub's data dir, or copy the hub's "
                "creds/hub.creds there"
            )
        return path

    @property
    def system_credentials(self) -> Path:
        return self.service_credentials().system

    def keyring(self) -> Keyring:
        """The hub's keyring, created with a first key-encryption key on first use."""
        return Keyring.open(self.keys_dir)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.store_dir.mkdir(exist_ok=True)

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
