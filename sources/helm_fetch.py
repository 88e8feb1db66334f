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
from sources.helm_worker import WorkerAnswer, WorkerRequest
from sources.limits import SourceLimits, check_size, check_tree
from sources.processes import FetchDeadline
from sources.references import HostAllowList, SourceRef, url_endpoint

# helm_python is imported where it is used, not here: its native library holds ~65 MiB
# resident, which a hub that never fetches a chart should not pay.

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
    import helm_python

    from sources.helm_pull import helm_detail

    try:
        with helm_python.Chart.load_archive(data) as chart:
            name, version = chart.name, chart.version
        helm_python.expand(unpacked, archive)
    except helm_python.HelmError as e:
        raise InvalidSourceReference(
            f"{ref.describe()}: {archive.name} is not a chart Helm can load: {helm_detail(e, None)}"
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
    # The worker imports `sources` as this process did, wherever the fetch's directory is.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH", "")])]
    )
    for name in (
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
        # Its last words: the exception that ended it, or what killed it.
        said = done.stderr.decode(errors="replace").strip().splitlines()
        detail = " ".join(said[-1].split())[-500:] if said else ""
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
