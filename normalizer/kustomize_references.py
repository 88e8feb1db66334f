"""What a Kustomize overlay may refer to when fleetbus builds it: its own files, nothing else.

kustomize resolves a reference by trying, in an order that differs from field to field, a local
file, a local directory, a git repository (it runs `git` against a host it parses out of the
string, with scheme and host compared case-insensitively, scp-like `user@host:path` included)
and an HTTP(S) URL. Recognising remote references by their look (a deny-list of `://`, `git@`,
`github.com/`) missed `Git@host:org/repo`, `GitHub.com/org/repo//x?ref=main`,
`github.com:org/repo` and `HTTPS:/host/x.yaml`. So every reference is held to an allow-list
instead: a relative path made of plain segments (letters, digits, `.`, `_`, `-`, `+`), not
starting with something shaped like a host name, and, when the overlay was uploaded, resolving
inside the upload. Everything else is refused with the kustomization file, the field with its
position and the value.

Every field of a kustomization that can name a file, a directory or a URL is read: resources,
bases, components, crds, configurations, openapi, patches, patchesStrategicMerge,
patchesJson6902, replacements, config map and secret generators, and generators, transformers
and validators (inline configs and config files, whose built-in plugin configs carry paths of
their own). helmCharts are refused outright: inflating them needs `--enable-helm`, which fleetbus
never passes (publish the chart as a Helm source instead).

This check is the first line. The second is how `kubectl kustomize` runs (`kustomize.py`): with
no network and no `git`, so a reference wrongly let through here still cannot fetch anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from normalizer.documents import load_yaml_values
from normalizer.errors import InvalidYaml, RefusedReference

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_REFERENCE_LENGTH = 1024
ALLOWED_SEGMENT = re.compile(r"[A-Za-z0-9._+-]+")
HOST_SHAPED = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
REMOTE_RULE = "overlays build from their own files only (vendor what it names into the overlay)"


class Target(Enum):
    """What a reference may name, which decides how it is followed."""

    FILE = "file"
    FILE_OR_DIRECTORY = "file or directory"
    INLINE_OR_FILE = "inline patch or file"
    PLUGIN_CONFIG = "inline config, config file or directory"


@dataclass(frozen=True)
class Reference:
    """One value of a kustomization field that names something to load."""

    field: str
    """The field and its position, e.g. `resources[2]`, `configMapGenerator[0].files[1]`."""
    value: str
    target: Target


def reference_problem(value: str) -> str | None:
    """Why `value` cannot be a local reference, or None when it is a plain relative path.

    Pure: looks at the text only. Existence and containment are checked by `check_overlay`.
    """
    if not value:
        return "it is empty"
    if len(value) > MAX_REFERENCE_LENGTH:
        return f"it is longer than {MAX_REFERENCE_LENGTH} characters"
    if value.startswith("/"):
        return f"it is an absolute path; {REMOTE_RULE}"
    path = value.removesuffix("/")
    segments = path.split("/")
    for segment in segments:
        if not segment:
            return f"it holds '//' (a remote repository's subdirectory); {REMOTE_RULE}"
        if not ALLOWED_SEGMENT.fullmatch(segment):
            odd = next(ch for ch in segment if not ALLOWED_SEGMENT.fullmatch(ch))
            return f"it holds {odd!r} (a path here is letters, digits and . _ - + /); {REMOTE_RULE}"
        if segment.lower().endswith(".git") or segment.lower() == "_git":
            return f"it names a git repository ({segment!r}); {REMOTE_RULE}"
    first = next((segment for segment in segments if segment != "."), "")
    if len(segments) > 1 and first != ".." and HOST_SHAPED.fullmatch(first):
        return f"it starts with a host name ({first!r}); {REMOTE_RULE}"
    return None


def references_of(kustomization: Mapping[str, Any]) -> Iterator[Reference]:
    """Every reference in a kustomization, in the order of its fields."""
    for key in ("resources", "bases", "components"):
        yield from _listed(kustomization, key, Target.FILE_OR_DIRECTORY)
    for key in ("crds", "configurations"):
        yield from _listed(kustomization, key, Target.FILE)
    openapi = kustomization.get("openapi")
    if isinstance(openapi, Mapping):
        yield from _scalar(openapi, "path", "openapi.path", Target.FILE)
    yield from _listed(kustomization, "patchesStrategicMerge", Target.INLINE_OR_FILE)
    for key in ("patches", "patchesJson6902", "replacements"):
        for index, entry in _entries(kustomization, key):
            if isinstance(entry, Mapping):
                yield from _scalar(entry, "path", f"{key}[{index}].path", Target.FILE)
    for key in ("configMapGenerator", "secretGenerator"):
        for index, entry in _entries(kustomization, key):
            if isinstance(entry, Mapping):
                yield from _generator_files(entry, f"{key}[{index}]")
    for key in ("generators", "transformers", "validators"):
        yield from _listed(kustomization, key, Target.PLUGIN_CONFIG)


def plugin_config_references(config: Mapping[str, Any], where: str) -> Iterator[Reference]:
    """The paths inside a built-in plugin's config (a generator or transformer document)."""
    kind = config.get("kind")
    if kind == "PatchTransformer" or kind == "PatchJson6902Transformer":
        yield from _scalar(config, "path", f"{where}.path", Target.FILE)
    elif kind == "PatchStrategicMergeTransformer":
        yield from _listed(config, "paths", Target.INLINE_OR_FILE, prefix=f"{where}.")
    elif kind in ("ConfigMapGenerator", "SecretGenerator"):
        yield from _generator_files(config, where)
    elif kind == "ReplacementTransformer":
        for index, entry in _entries(config, "replacements"):
            if isinstance(entry, Mapping):
                yield from _scalar(
                    entry, "path", f"{where}.replacements[{index}].path", Target.FILE
                )


def check_overlay(
    directory: Path, *, inside: Path | None = None, inside_name: str = "upload"
) -> None:
    """Refuse an overlay that refers to anything but plain relative paths (of the upload).

    Follows local directories transitively. With `inside`, every reference must also resolve
    (symbolic links included) to a path under it: an upload (or a Git repository, named by
    `inside_name` in the refusal) builds from itself only.
    """
    _OverlayCheck(
        Path(os.path.realpath(inside)) if inside is not None else None, inside_name
    ).visit(Path(os.path.realpath(directory)))


def local_directories(directory: Path) -> set[Path]:
    """Every local directory an overlay refers to, transitively (what an upload must hold).

    References that break the allow-list are left out: the hub refuses them with the reason.
    """
    found: set[Path] = set()
    pending = [directory.resolve()]
    while pending:
        current = pending.pop()
        for file in _kustomization_files(current):
            try:
                loaded = load_yaml_values(file.read_text(), str(file))
            except (InvalidYaml, OSError, UnicodeDecodeError):
                continue
            document = loaded[0] if len(loaded) == 1 else None
            if not isinstance(document, Mapping):
                continue
            for reference in references_of(document):
                if reference_problem(reference.value) is not None:
                    continue
                target = (current / _path_of(reference)).resolve()
                if target.is_dir() and target not in found:
                    found.add(target)
                    pending.append(target)
    return found


class _OverlayCheck:
    def __init__(self, inside: Path | None, inside_name: str = "upload") -> None:
        self.inside = inside
        self.inside_name = inside_name
        self.visited: set[Path] = set()

    def label(self, path: Path) -> str:
        if self.inside is not None:
            return path.relative_to(self.inside).as_posix() or "."
        return str(path)

    def visit(self, directory: Path, *, configs: bool = False) -> None:
        if directory in self.visited:
            return
        self.visited.add(directory)
        for file in _kustomization_files(directory):
            document = self.load(file)
            if not isinstance(document, Mapping):
                continue  # kustomize says what is wrong with it
            label = self.label(file)
            for key in ("helmCharts", "helmGlobals", "helmChartInflationGenerator"):
                if key in document:
                    raise RefusedReference(
                        label,
                        key,
                        None,
                        "inflating Helm charts inside Kustomize needs --enable-helm, which "
                        "fleetbus never runs; publish the chart as a Helm source instead",
                    )
            for reference in references_of(document):
                self.follow(directory, label, reference, configs=configs)

    def follow(self, directory: Path, label: str, reference: Reference, *, configs: bool) -> None:
        value = reference.value
        # Inline content spans lines; a single line is a path (a URL cannot hold a line break,
        # so kustomize never fetches a multi-line value).
        if reference.target in (Target.INLINE_OR_FILE, Target.PLUGIN_CONFIG) and "\n" in value:
            if reference.target is Target.PLUGIN_CONFIG:
                self.check_configs(directory, label, reference.field, value)
            return
        problem = reference_problem(value)
        if problem is not None:
            raise RefusedReference(label, reference.field, value, problem)
        resolved = Path(os.path.realpath(directory / _path_of(reference)))
        if self.inside is not None and not _is_within(self.inside, resolved):
            raise RefusedReference(
                label,
                reference.field,
                value,
                f"it points outside the {self.inside_name} (after links)",
            )
        if resolved.is_dir():
            if reference.target in (Target.FILE_OR_DIRECTORY, Target.PLUGIN_CONFIG):
                self.visit(resolved, configs=configs or reference.target is Target.PLUGIN_CONFIG)
        elif resolved.is_file() and (configs or reference.target is Target.PLUGIN_CONFIG):
            self.check_configs(directory, label, reference.field, self.read(resolved))

    def check_configs(self, directory: Path, label: str, field: str, text: str) -> None:
        try:
            documents = load_yaml_values(text, label)
        except InvalidYaml as e:
            raise RefusedReference(
                label, field, _shorten(text), f"it cannot be read as YAML ({_one_line(e)})"
            ) from e
        for index, document in enumerate(documents):
            if not isinstance(document, Mapping):
                continue
            where = f"{field}[document {index}]" if len(documents) > 1 else field
            if document.get("kind") == "HelmChartInflationGenerator":
                raise RefusedReference(
                    label,
                    where,
                    "HelmChartInflationGenerator",
                    "fleetbus never inflates Helm charts inside Kustomize; publish the chart "
                    "as a Helm source instead",
                )
            for reference in plugin_config_references(document, where):
                self.follow(directory, label, reference, configs=False)

    def load(self, file: Path) -> Any:
        text = self.read(file)
        try:
            documents = load_yaml_values(text, self.label(file))
        except InvalidYaml as e:
            # What we cannot read, we cannot check: refused rather than handed to kustomize.
            raise RefusedReference(
                self.label(file), "the file", None, f"it cannot be read as YAML ({_one_line(e)})"
            ) from e
        if len(documents) > 1:
            raise RefusedReference(
                self.label(file), "the file", None, "a kustomization is one YAML document"
            )
        return documents[0] if documents else None

    def read(self, file: Path) -> str:
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RefusedReference(
                self.label(file), "the file", None, f"it cannot be read as UTF-8 text ({e})"
            ) from e


def _kustomization_files(directory: Path) -> list[Path]:
    return [directory / name for name in KUSTOMIZATION_FILES if (directory / name).is_file()]


def _path_of(reference: Reference) -> str:
    return reference.value.removesuffix("/") or "."


def _is_within(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _entries(mapping: Mapping[str, Any], key: str) -> Iterator[tuple[int, Any]]:
    entries = mapping.get(key)
    if isinstance(entries, list):
        yield from enumerate(entries)
    elif entries is not None:
        yield 0, entries


def _listed(
    mapping: Mapping[str, Any], key: str, target: Target, *, prefix: str = ""
) -> Iterator[Reference]:
    for index, entry in _entries(mapping, key):
        if not isinstance(entry, (Mapping, list)) and entry is not None:
            yield Reference(f"{prefix}{key}[{index}]", _text(entry), target)


def _scalar(
    mapping: Mapping[str, Any], key: str, field: str, target: Target
) -> Iterator[Reference]:
    value = mapping.get(key)
    if value is not None and not isinstance(value, (Mapping, list)):
        yield Reference(field, _text(value), target)


def _generator_files(entry: Mapping[str, Any], where: str) -> Iterator[Reference]:
    for index, file in _entries(entry, "files"):
        if isinstance(file, (Mapping, list)) or file is None:
            continue
        # `files` entries are `path` or `key=path`; kustomize splits at the first '='.
        text = _text(file)
        path = text.split("=", 1)[1] if "=" in text else text
        yield Reference(f"{where}.files[{index}]", path, Target.FILE)
    for index, env in _entries(entry, "envs"):
        if not isinstance(env, (Mapping, list)) and env is not None:
            yield Reference(f"{where}.envs[{index}]", _text(env), Target.FILE)
    yield from _scalar(entry, "env", f"{where}.env", Target.FILE)


def _text(value: object) -> str:
    # YAML may hand back a date, a number or bytes where kustomize sees a string; checking
    # its printed form is stricter, never looser.
    return value if isinstance(value, str) else repr(value)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 60 else flat[:57] + "..."
