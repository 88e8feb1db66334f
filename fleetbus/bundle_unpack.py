"""Unpacking the edge bundle the hub answers `POST /api/v1/clusters` with into a directory.

The archive arrives over the network, so it is never handed to `extractall`: it is read member
by member, and only regular files directly under its one top-level directory (named after the
cluster) are accepted — no links, devices, absolute or `..` paths — within count and size
limits. Every file is written here with a mode chosen here, not the archive's: the key and the
Helm values (which inline the key) 0600, the rest 0644 (less the umask), the directory 0700.

Where a bundle may go: a new or empty directory, or one that already holds a bundle of the same
cluster. The latter is what registering again after `fleetbus cluster rm` does: the new
certificate replaces the old one in place, and whatever else lives there (such as the `state/`
of a leaf run from the bundle directory) is left alone. Any other non-empty directory is
refused before the hub is asked, so a mistyped `--out` cannot overwrite another cluster's key.

The whole archive is written into a hidden staging directory inside the target and checked with
`read_edge_bundle` (files present, certificate issued to this cluster) before any file is moved
into place, so a bad archive leaves the directory as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import orjson

from edge_connector.errors import BundleError
from fleetbus.bundle import (
    CREDS_FILE,
    KEY_FILE,
    SETTINGS_FILE,
    VALUES_FILE,
    EdgeBundle,
    read_edge_bundle,
)
from taskset.projects import short_name

CLUSTER_FILE = "cluster.json"
"""Name and labels of the cluster, for people reading the directory."""
PRIVATE_FILES = frozenset({KEY_FILE, CREDS_FILE, VALUES_FILE})
MAX_MEMBERS = 64
MAX_BUNDLE_BYTES = 8 * 1024 * 1024
STAGING_PREFIX = ".fleetbus-bundle-"
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class BundleTarget:
    """A directory checked to take a cluster's bundle."""

    root: Path
    cluster: str
    created: bool
    """The directory did not exist: `discard` removes it again."""

    def discard(self) -> None:
        """Undo `prepare_bundle_dir` when no bundle was written."""
        if self.created:
            shutil.rmtree(self.root, ignore_errors=True)


def bundle_cluster(directory: Path) -> str | None:
    """The cluster a bundle directory belongs to, by its `edge.json` or `cluster.json`."""
    for name, key in ((SETTINGS_FILE, "cluster"), (CLUSTER_FILE, "name")):
        try:
            document = orjson.loads((directory / name).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(document, dict) and isinstance(document.get(key), str):
            return str(document[key])
    return None


def names_cluster(full: str, given: str) -> bool:
    """Whether the cluster named `full` on the hub is the one the user named `given` (its
    name in its project is enough: `east` is `payments--east` in project payments)."""
    return full == given or short_name(full) == given


def prepare_bundle_dir(out: Path, cluster: str) -> BundleTarget:
    """Check that `out` may take `cluster`'s bundle, and create it; before the hub is asked."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out} exists and is not a directory; choose a new directory for --out")
    if out.is_dir():
        try:
            entries = [p for p in out.iterdir() if not p.name.startswith(STAGING_PREFIX)]
        except OSError as e:
            raise BundleError(f"cannot read {out}: {e.strerror or e}") from e
        owner = bundle_cluster(out)
        if entries and not (owner and names_cluster(owner, cluster)):
            holds = f"the bundle of cluster {owner}" if owner else "other files"
            raise BundleError(
                f"{out} is not empty (it holds {holds}); write the bundle of {cluster} into a "
                "new or empty directory, or into the directory of an earlier bundle of "
                f"{cluster}"
            )
        return BundleTarget(root=out, cluster=cluster, created=False)
    try:
        out.mkdir(mode=0o700, parents=True)
    except OSError as e:
        raise BundleError(f"cannot create {out}: {e.strerror or e}") from e
    return BundleTarget(root=out, cluster=cluster, created=True)


def archive_files(archive: bytes, cluster: str) -> dict[str, bytes]:
    """The files of a bundle archive by name, after checking every member."""
    files: dict[str, bytes] = {}
    total = 0
    top: str | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise BundleError(f"the bundle archive has more than {MAX_MEMBERS} entries")
                parts = PurePosixPath(member.name).parts
                if top is None and parts and names_cluster(parts[0], cluster):
                    top = parts[0]  # the cluster's full name in its project
                if member.isdir() and parts == (top,):
                    continue
                if not (member.isreg() and len(parts) == 2 and parts[0] == top):
                    raise BundleError(
                        f"the bundle archive holds {member.name!r}; only files directly under "
                        f"{cluster}/ belong in it"
                    )
                name = parts[1]
                if not FILE_NAME.fullmatch(name) or name in files:
                    raise BundleError(f"the bundle archive holds an unexpected file {name!r}")
                total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise BundleError(
                        f"the bundle archive unpacks to more than {MAX_BUNDLE_BYTES:,} bytes"
                    )
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise BundleError(f"the bundle archive's {member.name!r} cannot be read")
                files[name] = extracted.read(MAX_BUNDLE_BYTES + 1)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise BundleError(f"the hub's answer is not a readable bundle archive: {e}") from e
    return files


def write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def unpack_bundle(archive: bytes, target: BundleTarget) -> EdgeBundle:
    """Check `archive` and write its files (and `cluster.json`) into `target.root`."""
    files = archive_files(archive, target.cluster)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.root))
    try:
        for name, data in files.items():
            write_file(staging / name, data, 0o600 if name in PRIVATE_FILES else 0o644)
        staged = read_edge_bundle(staging)
        if not names_cluster(staged.cluster, target.cluster):
            raise BundleError(
                f"the hub sent the bundle of cluster {staged.cluster}, not {target.cluster}"
            )
        summary = {"name": staged.cluster, "labels": staged.settings.labels}
        write_file(
            staging / CLUSTER_FILE,
            orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n",
            0o644,
        )
        for name in sorted(os.listdir(staging)):
            os.replace(staging / name, target.root / name)
        os.chmod(target.root, 0o700)
    except OSError as e:
        raise BundleError(f"cannot write the bundle into {target.root}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    return read_edge_bundle(target.root)
