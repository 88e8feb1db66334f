"""Unpacking uploaded archives (Helm chart .tgz, Kustomize directory .tar.gz) without trusting them.

An upload is whatever a client chose to send. `tarfile.extractall` would follow its word on
paths and links, so every entry is checked before anything is written, and refused with a 4xx
naming the entry when it:

- has an absolute path or a `..` component (it would land outside the extraction dir);
- is a device, a FIFO or another special file;
- is a symbolic link resolving outside the extraction dir (checked against the real
  filesystem, so chains of links cannot escape either), or a hard link to anything but a file
  extracted before it;
- would be written below a symbolic link;
- pushes the archive over its limits: entries, bytes of one file, bytes in total (counted as
  they decompress, so a compression bomb stops at the limit, not at the end of the disk).

A Kustomize upload is also checked before it is built: every reference must be a plain relative
path inside the archive (`normalizer.kustomize_references.check_overlay`).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from api.errors import ArchiveTooLarge, InvalidRequest, UnsafeArchive

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 5000
    max_file_bytes: int = 16 * 1024 * 1024
    max_total_bytes: int = 64 * 1024 * 1024


def is_archive(data: bytes) -> bool:
    """Whether an upload is a (gzipped) tar archive rather than a YAML document."""
    if data.startswith(GZIP_MAGIC):
        return True
    return len(data) > 262 and data[257:262] == b"ustar"


def _entry_path(name: str) -> PurePosixPath:
    if not name or "\x00" in name:
        raise UnsafeArchive(name, "empty or malformed name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(name, "absolute paths are not allowed")
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [part for part in path.parts if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(name, "'..' components are not allowed")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _check_parent(root: Path, target: Path, name: str) -> None:
    """The directory `target` goes in must really be inside `root` (no link on the way)."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if Path(os.path.realpath(parent)) != parent:
        raise UnsafeArchive(name, "it would be written through a symbolic link")
    if not _inside(root, parent):
        raise UnsafeArchive(name, "it would be written outside the archive")


def extract_archive(data: bytes, into: Path, limits: ArchiveLimits | None = None) -> list[str]:
    """Unpack a tar or tar.gz archive into the (empty) directory `into`; return entry names."""
    limits = limits or ArchiveLimits()
    root = Path(os.path.realpath(into))
    root.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    files: set[PurePosixPath] = set()
    links: list[tuple[str, Path]] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                if len(names) >= limits.max_entries:
                    raise ArchiveTooLarge(
                        member.name,
                        f"the archive has more than {limits.max_entries} entries",
                    )
                relative = _entry_path(member.name)
                names.append(member.name)
                if relative == PurePosixPath("."):
                    continue
                target = root / relative
                if member.isdir():
                    _check_parent(root, target, member.name)
                    if target.is_symlink():
                        raise UnsafeArchive(member.name, "a directory replaces a symbolic link")
                    target.mkdir(exist_ok=True)
                elif member.isreg():
                    if member.size > limits.max_file_bytes:
                        raise ArchiveTooLarge(
                            member.name,
                            f"{member.size:,} bytes, over the per-file limit of "
                            f"{limits.max_file_bytes:,} bytes",
                        )
                    total += member.size
                    if total > limits.max_total_bytes:
                        raise ArchiveTooLarge(
                            member.name,
                            f"the archive unpacks to more than {limits.max_total_bytes:,} bytes",
                        )
                    _check_parent(root, target, member.name)
                    source = archive.extractfile(member)
                    if source is None:
                        raise UnsafeArchive(member.name, "its content cannot be read")
                    _write_new(target, source, member.name, member.size)
                    files.add(relative)
                elif member.issym():
                    _check_parent(root, target, member.name)
                    link = member.linkname
                    if not link or os.path.isabs(link):
                        raise UnsafeArchive(
                            member.name,
                            f"symbolic link to absolute path {link!r} is not allowed",
                        )
                    resolved = Path(os.path.realpath(target.parent / link))
                    if not _inside(root, resolved):
                        raise UnsafeArchive(
                            member.name,
                            f"symbolic link to {link!r} points outside the archive",
                        )
                    if target.exists() or target.is_symlink():
                        raise UnsafeArchive(member.name, "the entry appears twice")
                    os.symlink(link, target)
                    links.append((member.name, target))
                elif member.islnk():
                    source_path = _entry_path(member.linkname)
                    if source_path not in files:
                        raise UnsafeArchive(
                            member.name,
                            f"hard link to {member.linkname!r}, which is not a file extracted "
                            "before it",
                        )
                    _check_parent(root, target, member.name)
                    if target.exists() or target.is_symlink():
                        raise UnsafeArchive(member.name, "the entry appears twice")
                    shutil.copyfile(root / source_path, target, follow_symlinks=False)
                    files.add(relative)
                else:
                    raise UnsafeArchive(
                        member.name,
                        "devices, FIFOs and other special files are not allowed",
                    )
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise InvalidRequest(f"the upload is not a readable tar or tar.gz archive: {e}") from e
    for name, link_path in links:
        if not _inside(root, Path(os.path.realpath(link_path))):
            raise UnsafeArchive(name, "symbolic link resolves outside the archive")
    return names


def _write_new(target: Path, source: IO[bytes], name: str, size: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as e:
        raise UnsafeArchive(name, "the entry appears twice") from e
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > size:
                raise UnsafeArchive(name, "holds more bytes than its header says")
            out.write(chunk)


def archive_root(path: Path) -> Path:
    """The directory holding the content: a lone top-level directory (`chart/`) is unwrapped."""
    entries = [entry for entry in path.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return path
