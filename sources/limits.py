"""Limits on what a source may bring onto the hub: the same figures as for uploads.

A fetched chart archive, or the checked-out tree of a Git repository, is held to a number of
files, a size per file and a size in total (`api.archives.ArchiveLimits` has the same
defaults), and fetching it to a time limit. Symbolic links must stay inside the tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sources.errors import SourceEscapes, SourceTooLarge


@dataclass(frozen=True)
class SourceLimits:
    max_files: int = 5000
    max_file_bytes: int = 16 * 1024 * 1024
    max_total_bytes: int = 64 * 1024 * 1024
    timeout_s: float = 120.0


def check_size(what: str, size: int, limits: SourceLimits) -> None:
    if size > limits.max_total_bytes:
        raise SourceTooLarge(
            f"{what} is {size:,} bytes, over the limit of {limits.max_total_bytes:,} bytes"
        )


def check_tree(root: Path, limits: SourceLimits, what: str) -> None:
    """Every file under `root` within the limits; every symbolic link resolving inside it."""
    real_root = Path(os.path.realpath(root))
    files = 0
    total = 0
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = Path(os.path.realpath(path))
                if target != real_root and real_root not in target.parents:
                    raise SourceEscapes(
                        f"{what}: {relative} is a symbolic link to {os.readlink(path)!r}, "
                        "outside the source"
                    )
                continue
            if name in filenames:
                files += 1
                if files > limits.max_files:
                    raise SourceTooLarge(f"{what} has more than {limits.max_files:,} files")
                size = path.stat().st_size
                if size > limits.max_file_bytes:
                    raise SourceTooLarge(
                        f"{what}: {relative} is {size:,} bytes, over the per-file limit of "
                        f"{limits.max_file_bytes:,} bytes"
                    )
                total += size
                if total > limits.max_total_bytes:
                    raise SourceTooLarge(f"{what} holds more than {limits.max_total_bytes:,} bytes")
