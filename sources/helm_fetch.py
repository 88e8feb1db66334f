"""Charts from Helm HTTP repositories and OCI registries, through Helm's own client.

Every network exchange is helm-python-sdk's (`helm_python`: repository index, pull, registry
login, tags, manifest resolution, dependency build), run by the Helm worker in a child process
(`sources.helm_worker`) that the fetch's time limit kills and that stops itself at the size
limit while downloading; this module only decides what to ask for and checks what came back:

- a repository's index is read first, so a chart whose download URL sits on another host is
  refused before anything is downloaded from there;
- the chart version is chosen by Helm from the constraint (`^1.2`, `~1.2.3`, `1.2.3`);
- the download is held to the size limit as it arrives, the archive is unpacked by Helm, and
  the tree held to the file limits;
- dependencies not vendored in `charts/` are resolved by Helm's dependency build (from
  `Chart.lock`) or update, once every repository they name is on an allowed host; a `file://`
  dependency must stay inside the chart.

Credentials go to the worker on its standard input and to Helm as arguments (a basic-auth user
and password, or a registry login in a credentials file inside the fetch's own temporary
directory), and every message coming back is scrubbed of them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import helm_python
import msgspec

from normalizer.documents import load_yaml_values
from sources.credentials import Credential
from sources.errors import (
    HostNotAllowed,
    InvalidSourceReference,
    SourceError,
    SourceEscapes,
    SourceTimedOut,
    SourceTooLarge,
    SourceUnreachable,
)
from sources.helm_worker import READ_SLACK_BYTES, ReadBudget, WorkerAnswer, WorkerRequest
from sources.limits import SourceLimits, check_size, check_tree
from sources.processes import FetchDeadline
from sources.references import Endpoint, HostAllowList, SourceRef, url_endpoint

MANIFEST_ALLOWANCE_BYTES = 4 * 1024 * 1024
"""What resolving a registry manifest may read (the registry client's own manifest limit)."""

WORKER_ERRORS: dict[str, type[SourceError]] = {
    cls.__name__: cls
    for cls in (
        HostNotAllowed,
        InvalidSourceReference,
        SourceEscapes,
        SourceTimedOut,
        SourceTooLarge,
        SourceUnreachable,
    )
}


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
    deadline: FetchDeadline | None = None,
) -> FetchedChart:
    """Pull the chart `ref` names into `workdir`, unpack it and resolve its dependencies."""
    allowed.check(url_endpoint(ref.url), f"{ref.kind} source {ref.url}")
    deadline = deadline or FetchDeadline(limits.timeout_s)
    downloads = workdir / "download"
    downloads.mkdir(parents=True)
    pulled = run_worker(
        WorkerRequest(
            step="pull",
            kind=ref.kind,
            url=ref.url,
            chart=ref.chart,
            version=ref.version,
            plain_http=ref.plain_http,
            directory=str(downloads),
            workdir=str(workdir),
            allowed=[(e.host, e.port) for e in allowed.entries],
            credential=credential,
            max_bytes=limits.max_total_bytes,
        ),
        deadline,
        what=f"pulling {ref.describe()}",
        credential=credential,
    )
    archive = Path(str(pulled["archive"]))
    data = archive.read_bytes()
    check_size(f"chart archive {archive.name}", len(data), limits)
    digest = str(pulled.get("digest") or "") or "sha256:" + hashlib.sha256(data).hexdigest()
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
    resolve_dependencies(
        directory,
        allowed=allowed,
        plain_http=ref.plain_http,
        root=directory,
        limits=limits,
        deadline=deadline,
        workdir=workdir,
    )
    check_tree(directory, limits, f"chart {name} {version} with its dependencies")
    return FetchedChart(directory=directory, name=name, version=version, digest=digest)


def worker_environment(workdir: Path) -> dict[str, str]:
    """What the worker runs with: Helm's home, cache and configuration inside the fetch's own
    directory, and only the variables it needs (the way to Python, proxies, TLS roots)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "HELM_CACHE_HOME": str(workdir / ".helm-cache"),
        "HELM_CONFIG_HOME": str(workdir / ".helm-config"),
        "HELM_DATA_HOME": str(workdir / ".helm-data"),
        "LC_ALL": "C",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in (
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def run_worker(
    request: WorkerRequest,
    deadline: FetchDeadline,
    *,
    what: str,
    credential: Credential | None,
) -> dict[str, Any]:
    """One step in the Helm worker, within the fetch's time limit; its answer or its error."""
    workdir = Path(request.workdir)
    done = deadline.run(
        [sys.executable, "-m", "sources.helm_worker"],
        what=what,
        input=msgspec.json.encode(request),
        env=worker_environment(workdir),
        cwd=workdir,
    )
    lines = done.stdout.strip().splitlines()
    try:
        answer = msgspec.json.decode(lines[-1], type=WorkerAnswer) if lines else None
    except msgspec.DecodeError:
        answer = None
    if answer is None:
        detail = " ".join(done.stderr.decode(errors="replace").split())[-500:]
        if credential is not None:
            detail = credential.scrub(detail)
        raise SourceUnreachable(
            f"{what} failed: the Helm worker exited with {done.returncode}"
            + (f": {detail}" if detail else "")
        )
    if answer.error is not None:
        error = WORKER_ERRORS.get(answer.error.type, SourceUnreachable)
        message = answer.error.message
        raise error(credential.scrub(message) if credential is not None else message)
    return answer.result or {}


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
        raise SourceUnreachable(f"cannot pull {ref.describe()}: {_detail(e, credential)}") from e
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
                        f"{_detail(e, credential)}"
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
    text = _detail(error, credential)
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


def resolve_dependencies(
    directory: Path,
    *,
    allowed: HostAllowList,
    plain_http: bool,
    root: Path,
    limits: SourceLimits,
    deadline: FetchDeadline,
    workdir: Path,
) -> None:
    """Fill `charts/` with the chart's dependencies, if any are missing, through Helm.

    A `file://` dependency must resolve inside `root`: the chart itself when it was pulled, its
    repository when it came from Git. The Helm worker runs in `workdir`, outside `root`."""
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
    run_worker(
        WorkerRequest(
            step="dependencies",
            plain_http=plain_http,
            directory=str(directory),
            workdir=str(workdir),
            max_bytes=limits.max_total_bytes,
            chart=", ".join(missing),
        ),
        deadline,
        what=f"resolving the dependencies {', '.join(missing)} of the chart",
        credential=None,
    )


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
            f"cannot resolve the dependencies {request.chart} of the chart: {_detail(e, None)}"
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
