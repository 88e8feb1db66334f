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


class ConflictingOptions(HubError):
    """Options of one command that cannot be used together."""


class HubNotFound(HubError):
    pass


class DataDirLocked(HubError):
    pass


class HubUnreachable(HubError):
    """The hub's HTTP API did not answer (wrong address, hub stopped, network)."""


class HubRequestFailed(HubError):
    """The hub answered a request with an error; the message is the hub's own."""

    def __init__(self, status: int, message: str, detail: object = None) -> None:
        self.status = status
        self.detail = detail
        super().__init__(message)


class MissingOption(HubError):
    """A command needs an option it was not given."""


class ComponentStopped(HubError):
    """A component of a process that should run until stopped returned by itself."""
