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
from typing import Any

import yaml

from fleetbus.client import Upload
from normalizer.kustomize import KUSTOMIZATION_FILES

CHART_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz")
SKIPPED = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".ruff_cache"})
REFERENCE_KEYS = ("resources", "bases", "components")


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
    root = Path(os.path.commonpath([directory, *kustomize_references(directory)]))
    relative = directory.relative_to(root).as_posix()
    name = root.name or "source"
    return PackedSource(
        Upload(f"{name}.tar.gz", tar_gz(root, name), "application/gzip"),
        "" if relative == "." else relative,
    )


def kustomize_references(directory: Path, seen: set[Path] | None = None) -> set[Path]:
    """Every local directory a kustomization refers to, transitively (remote ones are skipped)."""
    seen = set() if seen is None else seen
    document = _kustomization(directory)
    for key in REFERENCE_KEYS:
        entries = document.get(key) or []
        for entry in entries if isinstance(entries, list) else []:
            if (
                not isinstance(entry, str)
                or "://" in entry
                or entry.startswith(("git@", "github.com/"))
            ):
                continue
            target = (directory / entry).resolve()
            if target.is_dir() and target not in seen:
                seen.add(target)
                kustomize_references(target, seen)
    return seen


def is_remote(reference: str) -> bool:
    return "://" in reference or reference.startswith(("git@", "github.com/"))


def _kustomization(directory: Path) -> dict[str, Any]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                return {}  # the normalizer has already said what is wrong with it
            return loaded if isinstance(loaded, dict) else {}
    return {}


def tar_gz(directory: Path, arcname: str) -> bytes:
    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if Path(info.name).name in SKIPPED else info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=arcname, filter=keep)
    return buffer.getvalue()
