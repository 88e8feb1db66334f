"""Errors of the Kubernetes contract: a resource that does not read as its CRD says."""

from __future__ import annotations

from taskset.errors import FleetbusError


class KubeContractError(FleetbusError):
    """Root of the errors raised by `kube_contract`."""


class UnreadableResource(KubeContractError):
    """A Task or Step whose content does not match its type (names the resource and field)."""
