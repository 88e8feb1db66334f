"""What a cluster offers a chart, and what a render knows of the release on that cluster. Pure.

Edges discover their cluster (`ClusterCapabilities`: the server version, and every API
group/version/kind with its scope) and report it; the scheduler renders a Helm taskset once per
distinct `RenderContext` its clusters need (cached by `RenderContext.digest`), so templates that
branch on `.Capabilities.KubeVersion` / `.Capabilities.APIVersions.Has` or on
`.Release.IsUpgrade` / `.Release.Revision` see the cluster they are for. What a chart consults
is found when it is published (`SourceInfo.consults`), so a chart that consults nothing is
rendered once for all.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from taskset.digest import digest_of

Consulted = Literal["capabilities", "release"]
"""What templates read that differs per cluster: `.Capabilities.*`, `.Release.IsUpgrade /
IsInstall / Revision`."""


class ApiResource(msgspec.Struct, frozen=True, kw_only=True, order=True):
    group_version: str = msgspec.field(name="groupVersion")
    """`v1`, `apps/v1`, `monitoring.coreos.com/v1`."""
    kind: str
    namespaced: bool


class ClusterCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    """A cluster as its apiserver's discovery describes it."""

    kube_version: str = msgspec.field(name="kubeVersion")
    """The server's git version, e.g. `v1.31.2`."""
    resources: list[ApiResource] = msgspec.field(default_factory=list)
    """Every served kind, sorted."""

    @property
    def digest(self) -> str:
        return digest_of(self)

    def api_versions(self) -> list[str]:
        """`.Capabilities.APIVersions`: every `group/version` and `group/version/Kind`."""
        found = {r.group_version for r in self.resources}
        found |= {f"{r.group_version}/{r.kind}" for r in self.resources}
        return sorted(found)


def capabilities_of(kube_version: str, resources: list[ApiResource]) -> ClusterCapabilities:
    """Capabilities in their canonical form (resources sorted, duplicates dropped)."""
    return ClusterCapabilities(kube_version=kube_version, resources=sorted(set(resources)))


class RenderContext(msgspec.Struct, frozen=True, kw_only=True):
    """What one render of a chart is for: the cluster's capabilities and the release there.

    Only what the chart consults is set, so clusters that differ in nothing the chart reads
    share a render."""

    kube_version: str = ""
    api_versions: tuple[str, ...] = ()
    is_upgrade: bool | None = None
    revision: int | None = None

    @property
    def digest(self) -> str:
        return digest_of(self)


def render_context(
    consults: list[str],
    capabilities: ClusterCapabilities | None,
    *,
    is_upgrade: bool,
    revision: int,
) -> RenderContext | None:
    """The context a chart consulting `consults` needs for one cluster; None when the published
    render serves (it consults nothing that differs, or the cluster's capabilities are not
    known yet and nothing else is consulted)."""
    context = RenderContext()
    if "capabilities" in consults and capabilities is not None:
        context = msgspec.structs.replace(
            context,
            kube_version=capabilities.kube_version,
            api_versions=tuple(capabilities.api_versions()),
        )
    if "release" in consults:
        context = msgspec.structs.replace(context, is_upgrade=is_upgrade, revision=revision)
    return None if context == RenderContext() else context
