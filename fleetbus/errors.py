"""Errors of the composition root: processes that cannot start, ports that are taken."""

from __future__ import annotations

from taskset.errors import FleetbusError


class HubError(FleetbusError):
    """Root of the errors raised by `fleetbus` itself."""


class BinaryNotFound(HubError):
    pass


class PortInUse(HubError):
    def __init__(self, host: str, port: int, flag: str) -> None:
        self.host = host
        self.port = port
        super().__init__(f"port {port} on {host} is already in use; choose another with {flag}")


class ServerFailed(HubError):
    pass


class HubNotFound(HubError):
    pass


class DataDirLocked(HubError):
    pass
