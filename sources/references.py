"""What a source reference is, and which hosts the hub may contact for one.

A reference is one of three kinds:

- `helm-repo`: a Helm HTTP(S) repository URL, a chart name and a version or semver constraint;
- `oci`: `oci://host[:port]/path/chart` and a version or constraint;
- `git`: a repository URL (`https://`, `http://`, `git://`, `ssh://` or scp-like
  `user@host:path`), a ref (branch, tag or commit) and a directory inside the repository.

The allow-list is the hub's `--source-host` entries: `host` allows every port of that host,
`host:port` only that port. Hosts are compared case-insensitively. Nothing else is contacted:
not a chart's download URL on another host, not a dependency's repository, not a Git URL a
reference does not name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from sources.errors import HostNotAllowed, InvalidSourceReference

Kind = Literal["helm-repo", "oci", "git"]
KINDS: tuple[Kind, ...] = ("helm-repo", "oci", "git")
SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/][^:]*)$")
CHART_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$")
GIT_REF = re.compile(r"^[A-Za-z0-9._/+-]{1,255}$")
VERSION_TEXT = re.compile(r"^[A-Za-z0-9.^~<>=!*|, +_-]{1,128}$")


@dataclass(frozen=True)
class SourceRef:
    kind: Kind
    url: str
    chart: str = ""
    version: str = ""
    """A chart version or semver constraint; empty: the latest."""
    ref: str = ""
    path: str = ""
    plain_http: bool = False
    """An OCI registry spoken to over HTTP rather than HTTPS (`helm pull --plain-http`)."""

    def describe(self) -> str:
        if self.kind == "git":
            where = f" {self.path}" if self.path else ""
            return f"git {self.url} at {self.ref or 'HEAD'}{where}"
        if self.kind == "oci":
            return f"{self.url} {self.version or 'latest'}"
        return f"chart {self.chart} {self.version or 'latest'} from {self.url}"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int | None

    def text(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def check_reference(ref: SourceRef) -> SourceRef:
    """`ref` if it is well-formed; otherwise `InvalidSourceReference` naming the field."""
    if ref.kind not in KINDS:
        raise InvalidSourceReference(f"source kind must be one of {', '.join(KINDS)}")
    if not ref.url or len(ref.url) > 2048 or any(c.isspace() for c in ref.url):
        raise InvalidSourceReference(f"source URL {ref.url!r} is empty, too long or has spaces")
    if _has_userinfo(ref.url):
        raise InvalidSourceReference(
            f"source URL {_without_userinfo(ref.url)!r} carries credentials; store credentials "
            "with `fleetbus source credentials set` and name them with --credentials"
        )
    if ref.version and not VERSION_TEXT.match(ref.version):
        raise InvalidSourceReference(
            f"version {ref.version!r} is not a chart version or semver constraint"
        )
    if ref.kind == "helm-repo":
        if urlsplit(ref.url).scheme not in ("http", "https"):
            raise InvalidSourceReference(
                f"a Helm repository URL starts with https:// (or http://), got {ref.url!r}"
            )
        if not CHART_NAME.match(ref.chart):
            raise InvalidSourceReference(
                f"a Helm repository source needs a chart name (--chart), got {ref.chart!r}"
            )
    elif ref.kind == "oci":
        parts = urlsplit(ref.url)
        if parts.scheme != "oci" or not parts.path.strip("/"):
            raise InvalidSourceReference(
                f"an OCI chart reference looks like oci://registry/path/chart, got {ref.url!r}"
            )
        if ":" in parts.path or "@" in parts.path:
            raise InvalidSourceReference(
                f"give the chart version with --version, not in the reference {ref.url!r}"
            )
    else:
        endpoint_of(ref)
        if ref.ref and (not GIT_REF.match(ref.ref) or ".." in ref.ref or ref.ref.startswith("-")):
            raise InvalidSourceReference(f"git ref {ref.ref!r} is not a branch, tag or commit")
        check_repo_path(ref.path)
    return ref


def _has_userinfo(url: str) -> bool:
    if "://" not in url:
        return False
    return "@" in urlsplit(url).netloc and ":" in urlsplit(url).netloc.split("@", 1)[0]


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()


def check_repo_path(path: str) -> PurePosixPath:
    """A directory inside a repository: relative, without `..`."""
    relative = PurePosixPath(path or ".")
    if relative.is_absolute() or ".." in relative.parts or path.startswith("-"):
        raise InvalidSourceReference(
            f"path {path!r} must be a relative directory inside the repository"
        )
    return relative


def chart_name_of(ref: SourceRef) -> str:
    """The chart a reference names: `chart`, or the last segment of an OCI reference."""
    if ref.kind == "oci":
        return urlsplit(ref.url).path.rstrip("/").rsplit("/", 1)[-1]
    return ref.chart


def endpoint_of(ref: SourceRef) -> Endpoint:
    """The host (and port, when given) a reference makes the hub contact."""
    if ref.kind == "git":
        match = SCP_LIKE.match(ref.url) if "://" not in ref.url else None
        if match is not None:
            return Endpoint(match["host"].lower(), None)
        parts = urlsplit(ref.url)
        if parts.scheme not in ("https", "http", "git", "ssh"):
            raise InvalidSourceReference(
                f"a Git URL uses https://, http://, git://, ssh:// or user@host:path, "
                f"got {ref.url!r}"
            )
        return url_endpoint(ref.url)
    return url_endpoint(ref.url)


def url_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as e:
        raise InvalidSourceReference(f"URL {url!r} has an invalid port") from e
    if not parts.hostname:
        raise InvalidSourceReference(f"URL {url!r} names no host")
    return Endpoint(parts.hostname.lower(), port)


def parse_allowed_host(entry: str) -> Endpoint:
    text = entry.strip().lower()
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not sep:
        host = text
    if not host or not re.fullmatch(r"[a-z0-9.-]+|\[[0-9a-f:]+\]", host):
        raise InvalidSourceReference(f"allowed source host {entry!r} is not a host[:port]")
    if sep and not port.isdigit():
        raise InvalidSourceReference(f"allowed source host {entry!r} has an invalid port")
    return Endpoint(host, int(port) if sep else None)


@dataclass(frozen=True)
class HostAllowList:
    """The hosts the hub may contact for sources; empty allows none."""

    entries: tuple[Endpoint, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> HostAllowList:
        return cls(tuple(parse_allowed_host(entry) for entry in entries))

    def allows(self, endpoint: Endpoint) -> bool:
        return any(
            entry.host == endpoint.host and (entry.port is None or entry.port == endpoint.port)
            for entry in self.entries
        )

    def check(self, endpoint: Endpoint, what: str) -> None:
        if self.allows(endpoint):
            return
        configured = ", ".join(e.text() for e in self.entries) or "none"
        raise HostNotAllowed(
            f"{what} is on host {endpoint.text()}, which this hub may not contact "
            f"(allowed source hosts: {configured}); start the hub with "
            f"--source-host {endpoint.host} to allow it"
        )
