"""What the access component needs from the process that runs it, as structural types.

The composition root owns the hub's nats-server child process and its data dir; access only
reloads the one, reads the other's secrets and writes its config. `fleetbus.natsserver.NatsServer`
and `fleetbus.datadir.DataDir` satisfy these without knowing of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class HubServer(Protocol):
    """The hub's own nats-server: where to reach it, and how to make it re-read its config."""

    @property
    def client_url(self) -> str: ...

    @property
    def monitor_port(self) -> int: ...

    def reload(self) -> None: ...

    def log_tail(self) -> str: ...


class HubFiles(Protocol):
    """The hub's data dir as access uses it."""

    @property
    def root(self) -> Path: ...

    @property
    def nats_conf(self) -> Path: ...

    def secrets(self) -> dict[str, str]: ...
