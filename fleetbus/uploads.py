"""What `fleetbus publish` uploads: a source on this machine, as the hub's API takes it.

A chart archive or a YAML file goes as it is; a directory goes as a .tar.gz. A Kustomize
overlay usually builds on bases in sibling directories (`resources: [../../base]`), so the
archive holds the smallest directory containing the overlay and every local directory it
refers to, and `path` tells the hub which directory inside it is the overlay. Version control
and cache directories are left out.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fleetbus.client import Upload
from normalizer.kustomize_references import KUSTOMIZATION_FILES, local_directories

CHART_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz")
SKIPPED = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".ruff_cache"})


@dataclass(frozen=True)
class PackedSource:
    upload: Upload
    path: str = ""
    """The directory inside the archive holding the source ("" for its top directory)."""


def pack_source(path: Path) -> PackedSource:
    if path.is_dir():
        return pack_directory(path)
    if path.name in ("Chart.yaml", *KUSTOMIZATION_FILES):
        return pack_directory(path.parent)
    content_type = (
        "application/gzip" if path.name.endswith(CHART_ARCHIVE_SUFFIXES) else "application/yaml"
    )
    return PackedSource(Upload(path.name, path.read_bytes(), content_type))


def pack_directory(directory: Path) -> PackedSource:
    directory = directory.resolve()
    root = Path(os.path.commonpath([directory, *local_directories(directory)]))
    relative = directory.relative_to(root).as_posix()
    name = root.name or "source"
    return PackedSource(
        Upload(f"{name}.tar.gz", tar_gz(root, name), "application/gzip"),
        "" if relative == "." else relative,
    )


def tar_gz(directory: Path, arcname: str) -> bytes:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in SKIPPED else info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=arcname, filter=keep)
    return buffer.getvalue()
