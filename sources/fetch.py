"""One reference fetched onto the hub's disk, with where it came from.

`fetch_source` is blocking (Helm's client and `git` are); callers run it in a worker thread.
Its network steps run in child processes under one `FetchDeadline`: the time limit kills them,
and so does `FetchDeadline.cancel` from the caller that stopped waiting.
`known` is the provenance of the version published last: when the source still points at the
same commit, nothing is fetched; when a chart pulls with the same digest, it is not unpacked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from events.catalog import Provenance
from sources.credentials import Credential
from sources.errors import InvalidSourceReference
from sources.git_fetch import fetch_tree, remote_commit
from sources.helm_fetch import fetch_chart, resolve_dependencies
from sources.limits import SourceLimits, check_tree
from sources.processes import FetchDeadline
from sources.references import HostAllowList, SourceRef, check_reference, check_repo_path


@dataclass(frozen=True)
class FetchedSource:
    path: Path
    """The chart, overlay or YAML directory to normalize."""
    root: Path
    """What a Kustomize overlay may refer to: the repository (git) or the chart."""
    provenance: Provenance


@dataclass(frozen=True)
class FetchPolicy:
    allowed: HostAllowList
    limits: SourceLimits = field(default_factory=SourceLimits)


def fetch_source(
    ref: SourceRef,
    workdir: Path,
    policy: FetchPolicy,
    *,
    credential: Credential | None = None,
    known: Provenance | None = None,
    source_name: str = "",
    deadline: FetchDeadline | None = None,
) -> FetchedSource | None:
    """Fetch `ref` into the empty directory `workdir`; None when it is what `known` says."""
    check_reference(ref)
    deadline = deadline or FetchDeadline(policy.limits.timeout_s)
    if ref.kind == "git":
        commit = remote_commit(
            ref,
            workdir,
            allowed=policy.allowed,
            limits=policy.limits,
            credential=credential,
            deadline=deadline,
        )
        if known is not None and known.commit == commit and known.path == ref.path:
            return None
        tree = fetch_tree(
            ref,
            workdir,
            allowed=policy.allowed,
            limits=policy.limits,
            credential=credential,
            commit=commit,
            deadline=deadline,
        )
        relative = check_repo_path(ref.path)
        directory = tree.root.joinpath(*relative.parts)
        if not directory.is_dir() or directory.is_symlink():
            raise InvalidSourceReference(
                f"{ref.url} at {commit[:12]} has no directory {ref.path or '.'}"
            )
        if (directory / "Chart.yaml").is_file():
            resolve_dependencies(
                directory,
                allowed=policy.allowed,
                plain_http=ref.plain_http,
                root=tree.root,
                limits=policy.limits,
                deadline=deadline,
                workdir=workdir,
            )
            check_tree(tree.root, policy.limits, f"{ref.url} at {commit[:12]} with dependencies")
        return FetchedSource(
            path=directory,
            root=tree.root,
            provenance=Provenance(
                kind="git",
                url=ref.url,
                ref=ref.ref or "HEAD",
                commit=commit,
                path=ref.path,
                source=source_name,
            ),
        )
    chart = fetch_chart(
        ref,
        workdir,
        allowed=policy.allowed,
        limits=policy.limits,
        credential=credential,
        deadline=deadline,
    )
    provenance = Provenance(
        kind=ref.kind,
        url=ref.url,
        chart=chart.name,
        chart_version=chart.version,
        digest=chart.digest,
        source=source_name,
    )
    if known is not None and (known.digest, known.chart_version) == (
        chart.digest,
        chart.version,
    ):
        return None
    return FetchedSource(path=chart.directory, root=chart.directory, provenance=provenance)
