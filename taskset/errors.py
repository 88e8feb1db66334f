"""The root of every error fleetbus raises on purpose.

Each package has its own root exception deriving from `FleetbusError`, so the CLI and the API
can tell a user's mistake or an unavailable dependency (a clear message, no traceback) from a
bug (a traceback).
"""

from __future__ import annotations


class FleetbusError(Exception):
    """An expected failure with a message meant for the user."""


class InvalidName(FleetbusError):
    def __init__(self, what: str, name: str, reason: str) -> None:
        self.what = what
        self.name = name
        super().__init__(f"invalid {what} name {name!r}: {reason}")
