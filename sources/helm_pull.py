"""The Helm worker's side of a chart fetch: Helm's client asked for one archive or one chart's
dependencies, within the read budget the worker watches (`sources.helm_worker`).

It runs in the worker process only, so it imports no more than Helm's client needs: the
worker starts once per fetch step. Messages coming back from Helm are scrubbed of the
credential before they leave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import helm_python

from sources.credentials import Credential
from sources.errors import InvalidSourceReference, SourceUnreachable
from sources.helm_worker import READ_SLACK_BYTES, ReadBudget, WorkerRequest
from sources.references import Endpoint, HostAllowList, SourceRef, url_endpoint

MANIFEST_ALLOWANCE_BYTES = 4 * 1024 * 1024
"""What resolving a registry manifest may read (the registry client's own manifest limit)."""


def helm_detail(error: helm_python.HelmError, credential: Credential | None) -> str:
    text = " ".join(str(error.detail or error).split())
    return credential.scrub(text) if credential else text


def pull_archive(request: WorkerRequest, budget: ReadBudget) -> dict[str, Any]:
    """In the worker: pull the archive into `request.directory`; its path and digest."""
    ref = SourceRef(
        kind="oci" if request.kind == "oci" else "helm-repo",
        url=request.url,
        chart=request.chart,
        version=request.version,
        plain_http=request.plain_http,
    )
    into = Path(request.directory)
    allowed = HostAllowList(tuple(Endpoint(host, port) for host, port in request.allowed))
    if ref.kind == "oci":
        archive, digest = _pull_oci(
            ref, into, Path(request.workdir), request.credential, budget, request.max_bytes
        )
    else:
        archive = _pull_from_repository(
            ref, into, allowed, request.credential, budget, request.max_bytes
        )
        digest = ""
    return {"archive": str(archive), "digest": digest}


def _pull_from_repository(
    ref: SourceRef,
    into: Path,
    allowed: HostAllowList,
    credential: Credential | None,
    budget: ReadBudget,
    max_bytes: int,
) -> Path:
    username, password = _basic(credential, ref)
    limit_text = f"{max_bytes:,} bytes"
    budget.limit(
        f"the index of Helm repository {ref.url}", max_bytes + READ_SLACK_BYTES, limit_text
    )
    try:
        index = helm_python.repo_index(ref.url, username=username, password=password)
    except helm_python.HelmError as e:
        raise SourceUnreachable(
            f"cannot read the index of Helm repository {ref.url}: {helm_detail(e, credential)}"
        ) from e
    entries = (index.get("entries") or {}).get(ref.chart)
    if not entries:
        raise InvalidSourceReference(f"Helm repository {ref.url} has no chart {ref.chart}")
    base = ref.url.rstrip("/") + "/"
    for entry in entries:
        for url in entry.get("urls") or []:
            absolute = urljoin(base, str(url))
            allowed.check(
                url_endpoint(absolute), f"chart {ref.chart} {entry.get('version')} ({absolute})"
            )
    # Helm reads the index again (and back from its cache) before the archive.
    index_bytes = budget.used()
    budget.limit(
        ref.describe(), max_bytes + 2 * index_bytes + READ_SLACK_BYTES, f"{max_bytes:,} bytes"
    )
    try:
        helm_python.pull(
            ref.chart,
            repo_url=ref.url,
            version=ref.version or None,
            destination=into,
            username=username,
            password=password,
        )
    except helm_python.HelmError as e:
        raise SourceUnreachable(
            f"cannot pull {ref.describe()}: {helm_detail(e, credential)}"
        ) from e
    return _only_archive(into, ref)


def _pull_oci(
    ref: SourceRef,
    into: Path,
    workdir: Path,
    credential: Credential | None,
    budget: ReadBudget,
    max_bytes: int,
) -> tuple[Path, str]:
    registry = url_endpoint(ref.url).text()
    try:
        with helm_python.RegistryClient(
            plain_http=ref.plain_http, credentials_file=workdir / "registry-config.json"
        ) as client:
            if credential is not None:
                username, password = _basic(credential, ref)
                budget.limit(f"the login to {registry}", READ_SLACK_BYTES, "the login's budget")
                try:
                    client.login(
                        registry, username or "", password or "", plain_http=ref.plain_http
                    )
                except helm_python.HelmError as e:
                    raise SourceUnreachable(
                        f"registry {registry} refused the login of user {username!r}: "
                        f"{helm_detail(e, credential)}"
                    ) from e
            budget.limit(ref.describe(), max_bytes + READ_SLACK_BYTES, f"{max_bytes:,} bytes")
            client.pull(
                ref.url, version=ref.version or None, destination=into, plain_http=ref.plain_http
            )
            budget.limit("", 0, "")
            archive = _only_archive(into, ref)
            with helm_python.Chart.load_archive(archive.read_bytes()) as chart:
                tag = chart.version.replace("+", "_")
            budget.limit(
                f"the manifest of {ref.url}:{tag}",
                MANIFEST_ALLOWANCE_BYTES + READ_SLACK_BYTES,
                f"{MANIFEST_ALLOWANCE_BYTES:,} bytes",
            )
            descriptor = client.resolve(f"{ref.url}:{tag}")
    except helm_python.HelmError as e:
        raise SourceUnreachable(
            f"cannot pull {ref.describe()}: {_unauthorized(e, credential, registry)}"
        ) from e
    return archive, str(descriptor.get("digest") or "")


def _unauthorized(error: helm_python.HelmError, credential: Credential | None, host: str) -> str:
    """Helm's message, with what to do when the registry wants credentials it did not get."""
    text = helm_detail(error, credential)
    lowered = text.lower()
    if any(sign in lowered for sign in ("401", "unauthorized", "credential not found")):
        hint = (
            f"registry {host} refused the credentials"
            if credential is not None
            else f"registry {host} needs credentials: store them with `fleetbus source "
            "credentials set` and name them with --credentials"
        )
        return f"{text} ({hint})"
    return text


def _basic(credential: Credential | None, ref: SourceRef) -> tuple[str | None, str | None]:
    if credential is None:
        return None, None
    if credential.kind == "basic":
        return credential.username, credential.password
    if credential.kind == "token" and ref.kind == "oci":
        return credential.username or "token", credential.token
    raise InvalidSourceReference(
        f"{credential.kind} credentials cannot be used for a {ref.kind} source "
        "(Helm repositories take basic credentials, OCI registries basic or token)"
    )


def _only_archive(directory: Path, ref: SourceRef) -> Path:
    archives = sorted(directory.glob("*.tgz"))
    if len(archives) != 1:
        raise SourceUnreachable(f"pulling {ref.describe()} gave no chart archive")
    return archives[0]


def build_dependencies(request: WorkerRequest, budget: ReadBudget) -> None:
    """In the worker: fill `charts/` of `request.directory` with Helm's dependency build (from
    `Chart.lock`) or update. The budget covers the charts and the indexes Helm reads for them."""
    directory = Path(request.directory)
    budget.limit(
        f"the dependencies {request.chart} of the chart",
        request.max_bytes + READ_SLACK_BYTES,
        f"{request.max_bytes:,} bytes",
    )
    try:
        if (directory / "Chart.lock").is_file():
            helm_python.dependency_build(directory, plain_http=request.plain_http)
        else:
            helm_python.dependency_update(directory, plain_http=request.plain_http)
    except helm_python.HelmError as e:
        raise SourceUnreachable(
            f"cannot resolve the dependencies {request.chart} of the chart: {helm_detail(e, None)}"
        ) from e
