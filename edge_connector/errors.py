"""Errors of the edge connector; `ConnectorError` is the root."""

from __future__ import annotations

from taskset.errors import FleetbusError


class ConnectorError(FleetbusError):
    """Root of every error raised by `edge_connector`."""


class ApplyFailed(ConnectorError):
    """An executor could not bring one object of a ClusterTask to its desired state."""

    def __init__(self, *, phase: str, object: str, reason: str) -> None:
        self.phase = phase
        self.object = object
        self.reason = reason
        super().__init__(f"{phase}: {object}: {reason}")


class BundleError(ConnectorError):
    """An edge bundle is missing a file or holds settings that cannot be used."""


class EdgeUnavailable(ConnectorError):
    """The edge's own nats-server could not be reached."""


class KeysUnreachable(EdgeUnavailable):
    """The hub's key service did not hand over a data key the desired state needs, after
    bounded retries (or it failed a moment ago and is given time before the next ask)."""


class KubeTransient(ConnectorError):
    """The apiserver was briefly unable to answer: 429 (e.g. a new CRD's storage still
    initializing), 5xx, or a connection refused or reset. Worth retrying with backoff."""
