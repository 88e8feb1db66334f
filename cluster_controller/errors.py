"""Errors of the cluster controller and its Kubernetes adapter.

`ControllerError` is the root. `cluster_controller.kube` translates every HTTP and client error
into one of these, so nothing from the HTTP stack or the kubeconfig reader leaks past it; the
reconcilers decide from the type alone whether to retry (`KubeUnavailable`), re-list
(`ResourceVersionExpired`) or report a failure in status (`KubeRejected` and its kin).
"""

from __future__ import annotations

from taskset.errors import FleetbusError


class ControllerError(FleetbusError):
    """Root of every error raised by `cluster_controller`."""


class KubeConfigError(ControllerError):
    """No usable kubeconfig: missing file, unknown context, unsupported auth."""


class KubeUnavailable(ControllerError):
    """The apiserver could not be reached, or answered 5xx / 429 (after bounded retries)."""


class KubeApiError(ControllerError):
    """The apiserver answered a request with an error status."""

    def __init__(self, code: int, reason: str, message: str, what: str = "") -> None:
        self.code = code
        self.reason = reason
        self.api_message = message
        self.what = what
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{message or reason} (HTTP {code} {reason})".strip())


class NotFound(KubeApiError):
    pass


class Conflict(KubeApiError):
    """409: a field-manager conflict, an optimistic-lock failure, or AlreadyExists."""


class Forbidden(KubeApiError):
    pass


class KubeRejected(KubeApiError):
    """400 / 422: the object itself is wrong (schema, immutable field, unknown field)."""


class ResourceVersionExpired(KubeApiError):
    """410 Gone: a watch or list asked for a resourceVersion etcd has compacted away; re-list."""


class UnknownKind(ControllerError):
    """The apiserver serves no resource for this apiVersion and kind (yet: a CRD may be new)."""

    def __init__(self, api_version: str, kind: str) -> None:
        self.api_version = api_version
        self.kind = kind
        super().__init__(f"the apiserver serves no {kind} in {api_version}")


class InvalidManifest(ControllerError):
    """A Step's object cannot be applied as written (no name, no kind, ...)."""


class CrdInstallFailed(ControllerError):
    """The controller's own CRDs could not be installed or did not become Established."""
