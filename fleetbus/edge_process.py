"""The `fleetbus edge` process made small: interpreter flags, allocator settings, lean imports.

An edge leaves its cluster's resources to the cluster's own applications, so the process is
started the way that costs least memory, wherever it is started (the edge chart's container,
a shell, `python -m fleetbus.cli edge`):

* `fleetbus edge` executes itself again (same PID, same arguments) under `-OO -X
  no_debug_ranges` (no docstrings, no assert statements, no column tables in code objects:
  the edge's own and its libraries' modules are a large part of its memory; nothing at the
  edge reads a docstring, and its help texts are plain strings) with glibc's allocator held to
  `MALLOC_ARENA_MAX=2` arenas (the edge's few helper threads would each get one otherwise) and
  freed heap handed back to the system above `MALLOC_TRIM_THRESHOLD_` (128 KiB).
* While the edge's modules are imported, `importlib.metadata` is a small stand-in that reads
  a distribution's version from its `.dist-info/METADATA` file: nats-py, httpx2 and fleetbus
  ask for their own version at import, and the real module (with zipfile, email parsing, csv,
  lzma and bz2 behind it, and its caches of every installed distribution) costs about 3 MiB.
  The stand-in is removed once the imports are done, so any later import gets the real one.
* Optional libraries its libraries would import but the edge never uses (h2: HTTP/2) are kept
  out (`keep_out_unused_modules`).

`FLEETBUS_EDGE_LEAN=0` turns all of it off (the process then runs as started). Memory figures
of each part: BENCHMARKS.md, P5.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

LEAN_ENV = "FLEETBUS_EDGE_LEAN"
"""`0` to run the edge process as started; `1` is set in the process it executes again."""
INTERPRETER_FLAGS = ("-OO", "-X", "no_debug_ranges")
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": str(128 * 1024)}


def is_lean() -> bool:
    """Whether this interpreter already runs with the edge's flags."""
    return sys.flags.optimize >= 2 and "no_debug_ranges" in sys._xoptions


def lean_command(argv: Sequence[str]) -> list[str]:
    """The command line that runs `fleetbus ARGV` as a lean edge process, keeping the
    interpreter options this one was started with (`-X importtime`, `-W ...`)."""
    kept: list[str] = []
    for name, value in sys._xoptions.items():
        if name != "no_debug_ranges":
            kept += ["-X", name if value is True else f"{name}={value}"]
    for option in sys.warnoptions:
        kept += ["-W", option]
    return [sys.executable, *INTERPRETER_FLAGS, *kept, "-m", "fleetbus.cli", *argv]


def lean_environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with the allocator settings (a value already set is kept) and the marker."""
    return {**ALLOCATOR_ENV, **environ, LEAN_ENV: "1"}


def become_lean(argv: Sequence[str]) -> None:
    """Execute this process again as a lean edge process, unless it is one already, was
    asked not to be (`FLEETBUS_EDGE_LEAN=0`), or was already executed again once (the flags
    did not take: then it runs as it is rather than loop)."""
    if os.environ.get(LEAN_ENV) in ("0", "1") or is_lean():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, lean_command(argv), lean_environment(dict(os.environ)))


UNUSED_OPTIONAL_MODULES = ("h2",)
"""Optional libraries the edge's own libraries import when installed but the edge never uses:
h2 (with hpack and hyperframe, about 5 MiB resident) is httpcore2's HTTP/2, and the edge
speaks HTTP/1.1 to the apiserver (`kube_http.client` never asks for HTTP/2); without it
httpcore2 puts in a stand-in that refuses HTTP/2."""


def keep_out_unused_modules() -> None:
    """Mark `UNUSED_OPTIONAL_MODULES` as absent in this process (an import of one raises
    ImportError, which their importers expect), unless one is loaded already or the edge
    runs as started (`FLEETBUS_EDGE_LEAN=0`)."""
    if os.environ.get(LEAN_ENV) == "0":
        return
    for name in UNUSED_OPTIONAL_MODULES:
        if not any(m == name or m.startswith(f"{name}.") for m in sys.modules):
            sys.modules[name] = None  # type: ignore[assignment]


class PackageNotFoundError(ModuleNotFoundError):
    """As `importlib.metadata.PackageNotFoundError`: no such distribution is installed."""


def _distribution_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def distribution_version(name: str, path: Sequence[str] | None = None) -> str:
    """The version of the installed distribution `name`, from its `.dist-info/METADATA`
    (the file `importlib.metadata.version` reads too), looked up along `path` (sys.path)."""
    wanted = _distribution_name(name)
    for entry in path if path is not None else sys.path:
        try:
            folders = [p for p in Path(entry or ".").iterdir() if p.suffix == ".dist-info"]
        except OSError:
            continue
        for folder in sorted(folders):
            project = folder.name[: -len(".dist-info")].rsplit("-", 1)[0]
            if _distribution_name(project) != wanted:
                continue
            try:
                with (folder / "METADATA").open(encoding="utf-8") as metadata:
                    for line in metadata:
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line.strip():
                            break  # the headers end: no version given
            except OSError:
                continue
    raise PackageNotFoundError(name)


@contextlib.contextmanager
def distribution_versions_without_metadata() -> Iterator[None]:
    """Within: `importlib.metadata` is a stand-in offering `version` and
    `PackageNotFoundError` (what the edge's libraries ask of it at import), unless the real
    one is already loaded. Afterwards the stand-in is gone; the functions taken from it keep
    working."""
    if "importlib.metadata" in sys.modules or os.environ.get(LEAN_ENV) == "0":
        yield
        return
    stand_in = types.ModuleType("importlib.metadata")
    stand_in.__dict__.update(
        version=distribution_version, PackageNotFoundError=PackageNotFoundError
    )
    package = importlib.import_module("importlib")
    sys.modules["importlib.metadata"] = stand_in
    package.metadata = stand_in  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]
        if getattr(package, "metadata", None) is stand_in:
            delattr(package, "metadata")
