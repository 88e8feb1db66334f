"""What a chart may ask of its cluster: `.Capabilities.KubeVersion` and `.APIVersions`.

Helm renders offline against a default cluster (Kubernetes v1.36.0, the built-in API versions
only). A chart that branches on them (`{{ if .Capabilities.APIVersions.Has
"monitoring.coreos.com/v1" }}` around a ServiceMonitor) then silently renders without the
object. `fleetbus render --kube-version V --api-versions G/V[/Kind]` passes what the target
clusters really have, like `helm template`; when a chart consults capabilities and none were
given, a note says that the defaults decided.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from normalizer.errors import UnsupportedSource

HELM_DEFAULT_KUBE_VERSION = "v1.36.0"
"""What helm-python-sdk's offline render reports as `.Capabilities.KubeVersion`."""

_KUBE_VERSION = re.compile(r"v?\d+\.\d+(\.\d+)?([-+][0-9A-Za-z.+-]+)?")
_API_VERSION = re.compile(
    r"(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9][a-z0-9]*"
    r"(/[A-Z][A-Za-z0-9]*)?"
)


@dataclass(frozen=True)
class Capabilities:
    """The cluster a chart is rendered for; empty means Helm's offline defaults."""

    kube_version: str | None = None
    api_versions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kube_version is not None and not _KUBE_VERSION.fullmatch(self.kube_version):
            raise UnsupportedSource(
                f"--kube-version {self.kube_version!r} is not a Kubernetes version "
                "(e.g. v1.31.2 or 1.31)"
            )
        for api_version in self.api_versions:
            if not _API_VERSION.fullmatch(api_version):
                raise UnsupportedSource(
                    f"--api-versions {api_version!r} is not GROUP/VERSION or "
                    "GROUP/VERSION/Kind (e.g. monitoring.coreos.com/v1/ServiceMonitor)"
                )

    @property
    def is_default(self) -> bool:
        return self.kube_version is None and not self.api_versions

    def render_options(self) -> dict[str, object]:
        """The options of helm-python-sdk's render that carry these capabilities."""
        options: dict[str, object] = {}
        if self.kube_version is not None:
            options["kube_version"] = self.kube_version
        if self.api_versions:
            options["api_versions"] = list(self.api_versions)
        return options


DEFAULT_CAPABILITIES = Capabilities()
"""Helm's offline defaults."""
