"""Errors of the access component: certificates, and access changes that did not take effect."""

from __future__ import annotations

from taskset.errors import FleetbusError


class AccessError(FleetbusError):
    """Root of the errors raised by `access`."""


class CertificateError(AccessError):
    """The CA or a certificate is missing, unreadable or not what fleetbus issued."""


class AccessNotEffective(AccessError):
    """The hub could not make a change of cluster access effective (reload, kick)."""


class AccountTooLarge(AccessError):
    """A NATS account's JWT would grow past what the servers take (too many linked clusters)."""
