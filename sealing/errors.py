"""Errors of sealing and opening secrets; every one names the key or envelope concerned."""

from __future__ import annotations

from taskset.errors import FleetbusError


class SealingError(FleetbusError):
    """Root of the errors of `sealing`."""


class KeyUnavailable(SealingError):
    """The data key an envelope names is not (or no longer) in the keyring."""

    def __init__(self, key_id: str, reason: str) -> None:
        self.key_id = key_id
        super().__init__(f"cannot open a secret sealed with data key {key_id}: {reason}")


class EnvelopeInvalid(SealingError):
    """An envelope that is malformed, tampered with, or does not open with its key."""


class KeyringInvalid(SealingError):
    """The keyring files in the data dir cannot be read (missing KEK, damaged file)."""
