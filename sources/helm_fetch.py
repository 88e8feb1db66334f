"""Charts from Helm HTTP repositories and OCI registries, through Helm's own client.

Every network exchange is helm-python-sdk's (`helm_python`: repository index, pull, registry
login, tags, manifest resolution, dependency build); this module only decides what to ask for
and checks what came back:

- a repository's index is read first, so a chart whose download URL sits on another host is
  refused before anything is downloaded from there;
- the chart version is chosen by Helm from the constraint (`^1.2`, `~1.2.3`, `1.2.3`);
- the archive is held to the size limit, unpacked by Helm, and the tree to the file limits;
- dependencies not vendored in `charts/` are resolved by Helm's dependency build (from
  `Chart.lock`) or update, once every repository they name is on an allowed host; a `file://`
  dependency must stay inside the chart.

Credentials go to Helm as arguments (a basic-auth user and password, or a registry login in a
credentials file inside the fetch's own temporary directory) and every message coming back is
scrubbed of them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from normalizer.documents import load_yaml_values
from sources.credentials import Credential
from sources.errors import (
    InvalidSourceReference,
    SourceEscapes,
    SourceUnreachable,
)
from sources.limits import SourceLimits, check_size, check_tree
from sources.references import HostAllowList, SourceRef, url_endpoint

if TYPE_CHECKING:
    import helm_python

# helm_python is imported where it is used, not here: its native library holds ~65 MiB
# resident, which a hub that never fetches a chart should not pay.


@dataclass(frozen=True)
class FetchedChart:
    directory: Path
    """The unpacked chart, dependencies resolved."""
    name: str
    version: str
    digest: str
    """sha256 of the archive (helm-repo) or the registry's manifest digest (oci)."""


def _detail(error: helm_python.HelmError, credential: Credential | None) -> str:
    text = " ".join(str(error.detail or error).split())
    return credential.scrub(text) if credential else text


def fetch_chart(
    ref: SourceRef,
    workdir: Path,
    *,
    allowed: HostAllowList,
    limits: SourceLimits,
    credential: Credential | None = None,
) -> FetchedChart:
    """Pull the chart `ref` names into `workdir`, unpack it and resolve its dependencies."""
    import helm_python

    allowed.check(url_endpoint(ref.url), f"{ref.kind} source {ref.url}")
    downloads = workdir / "download"
    downloads.mkdir(parents=True)
    if ref.kind == "oci":
        archive, digest = _pull_oci(ref, downloads, workdir, credential)
    else:
        archive = _pull_from_repository(ref, downloads, allowed, credential)
        digest = ""
    data = archive.read_bytes()
    check_size(f"chart archive {archive.name}", len(data), limits)
    digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
    unpacked = workdir / "chart"
    try:
        with helm_python.Chart.load_archive(data) as chart:
            name, version = chart.name, chart.version
        helm_python.expand(unpacked, archive)
    except helm_python.HelmError as e:
        raise InvalidSourceReference(
            f"{ref.describe()}: {archive.name} is not a chart Helm can load: {_detail(e, None)}"
        ) from e
    directory = unpacked / name
    if not (directory / "Chart.yaml").is_file():
        raise InvalidSourceReference(f"{archive.name} does not unpack to a chart named {name}")
    check_tree(directory, limits, f"chart {name} {version}")
    resolve_dependencies(directory, allowed=allowed, plain_http=ref.plain_http, root=directory)
    check_tree(directory, limits, f"chart {name} {version} with its dependencies")
    return FetchedChart(directory=directory, name=name, version=version, digest=digest)


def _pull_from_repository(
    ref: SourceRef, into: Path, allowed: HostAllowList, credential: Credential | None
) -> Path:
    import helm_python

    username, password = _basic(credential, ref)
    try:
        index = helm_python.repo_index(ref.url, username=username, password=password)
    except helm_python.HelmError as e:
        raise SourceUnreachable(
            f"cannot read the index of Helm repository {ref.url}: {_detail(e, credential)}"
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
        raise SourceUnreachable(f"cannot pull {ref.describe()}: {_detail(e, credential)}") from e
    return _only_archive(into, ref)


def _pull_oci(
    ref: SourceRef, into: Path, workdir: Path, credential: Credential | None
) -> tuple[Path, str]:
    import helm_python

    try:
        with helm_python.RegistryClient(
            plain_http=ref.plain_http, credentials_file=workdir / "registry-config.json"
        ) as client:
            if credential is not None:
                username, password = _basic(credential, ref)
                client.login(
                    url_endpoint(ref.url).text(),
                    username or "",
                    password or "",
                    plain_http=ref.plain_http,
                )
            client.pull(
                ref.url, version=ref.version or None, destination=into, plain_http=ref.plain_http
            )
            archive = _only_archive(into, ref)
            with helm_python.Chart.load_archive(archive.read_bytes()) as chart:
                tag = chart.version.replace("+", "_")
            descriptor = client.resolve(f"{ref.url}:{tag}")
    except helm_python.HelmError as e:
        raise SourceUnreachable(f"cannot pull {ref.describe()}: {_detail(e, credential)}") from e
    return archive, str(descriptor.get("digest") or "")


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


def resolve_dependencies(
    directory: Path, *, allowed: HostAllowList, plain_http: bool, root: Path
) -> None:
    """Fill `charts/` with the chart's dependencies, if any are missing, through Helm.

    A `file://` dependency must resolve inside `root`: the chart itself when it was pulled, its
    repository when it came from Git."""
    import helm_python

    documents = load_yaml_values((directory / "Chart.yaml").read_text(), "Chart.yaml")
    metadata = documents[0] if documents and isinstance(documents[0], dict) else {}
    declared = metadata.get("dependencies") or []
    if not isinstance(declared, list) or not declared:
        return
    vendored = _vendored_charts(directory / "charts")
    missing = []
    for dependency in declared:
        if not isinstance(dependency, dict):
            continue
        name = str(dependency.get("name") or "")
        repository = str(dependency.get("repository") or "")
        if repository.startswith("file://"):
            target = Path(os.path.realpath(directory / repository.removeprefix("file://")))
            inside = Path(os.path.realpath(root))
            if target != inside and inside not in target.parents:
                raise SourceEscapes(
                    f"chart dependency {name} points at {repository}, outside the "
                    f"{'chart' if root == directory else 'repository'}"
                )
        if name in vendored:
            continue
        missing.append(name)
        if repository.startswith(("http://", "https://", "oci://")):
            allowed.check(url_endpoint(repository), f"chart dependency {name} ({repository})")
        elif not repository.startswith("file://"):
            raise InvalidSourceReference(
                f"chart dependency {name} names repository {repository!r}; only URLs "
                "(https://, oci://) and file:// paths inside the chart can be resolved"
            )
    if not missing:
        return
    try:
        if (directory / "Chart.lock").is_file():
            helm_python.dependency_build(directory, plain_http=plain_http)
        else:
            helm_python.dependency_update(directory, plain_http=plain_http)
    except helm_python.HelmError as e:
        raise SourceUnreachable(
            f"cannot resolve the dependencies {', '.join(missing)} of the chart: {_detail(e, None)}"
        ) from e


def _vendored_charts(charts: Path) -> set[str]:
    names: set[str] = set()
    if not charts.is_dir():
        return names
    for entry in charts.iterdir():
        if entry.is_dir() and (entry / "Chart.yaml").is_file():
            names.add(entry.name)
        elif entry.name.endswith(".tgz"):
            names.add(entry.name.removesuffix(".tgz").rsplit("-", 1)[0])
    return names
