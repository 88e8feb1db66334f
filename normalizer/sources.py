"""The normalizer's entry point: any source (chart, overlay, YAML) to one `NormalizedSource`.

`normalize` is what the CLI and the HTTP API both call: the CLI with a path or stdin's bytes,
the API with an upload extracted to a temporary directory. It detects the format unless told,
reads and checks the source, and returns the Taskset together with what publishing needs to
keep beside it (a Helm chart's archive and the values it was rendered with).

Format detection, for a directory: `Chart.yaml` means Helm, a `kustomization.yaml` (`.yml`,
`Kustomization`) means Kustomize, anything else is plain YAML. A `.tgz` file is a chart, a file
named `Chart.yaml` or `kustomization.yaml` stands for its directory, any other file is YAML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from normalizer.builder import BuiltTaskset, build_taskset, taskset_name_from
from normalizer.capabilities import DEFAULT_CAPABILITIES, Capabilities
from normalizer.documents import SourceDocument, parse_documents, read_yaml_path
from normalizer.errors import SourceNotFound, UnsupportedSource
from normalizer.kustomize import DEFAULT_TIMEOUT_S, KUSTOMIZATION_FILES, read_kustomization
from normalizer.taskset_spec import (
    apply_settings,
    has_setting_annotations,
    merge_settings,
    settings_beside,
)
from normalizer.values import merge_values
from taskset.digest import canonical_json, digest_of
from taskset.model import SourceInfo, Taskset
from taskset.names import check_name

Format = Literal["helm", "kustomize", "yaml"]
FORMATS: tuple[Format, ...] = ("helm", "kustomize", "yaml")
DEFAULT_NAMESPACE = "default"
CHART_ARCHIVE_SUFFIXES = (".tgz", ".tar.gz")
GZIP_MAGIC = b"\x1f\x8b"
STDIN_LABEL = "<stdin>"


@dataclass(frozen=True)
class NormalizeOptions:
    """How to read a source. `values` are Helm values layers, merged in order (later wins)."""

    name: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    format: Format | None = None
    values: Sequence[Mapping[str, Any]] = ()
    kustomize_timeout: float = DEFAULT_TIMEOUT_S
    capabilities: Capabilities = DEFAULT_CAPABILITIES
    """The cluster a Helm chart is rendered for (`--kube-version`, `--api-versions`)."""
    previous: Taskset | None = None
    """The version published before: values a chart generates while rendering keep its
    values, so publishing the same inputs again gives the same Taskset ("unchanged")."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Taskset spec fields given with the source (`normalizer.taskset_spec`); they win over a
    `fleetbus.yaml` beside it."""
    settings_label: str = "the publish settings"
    """How errors name `settings` (e.g. "the command line")."""


@dataclass(frozen=True)
class NormalizedSource:
    """A normalized Taskset and what must be kept beside it to re-render it later."""

    taskset: Taskset
    chart_archive: bytes | None = None
    """A Helm source's chart archive (.tgz bytes), exactly as rendered; None for other formats."""
    values: dict[str, Any] = field(default_factory=dict)
    """The merged Helm values the taskset was rendered with; empty for other formats."""
    left_out: tuple[str, ...] = ()
    """Objects deliberately not taken (test and rollback hooks), one line each."""
    notes: tuple[str, ...] = ()
    """What the user should know about how the source was read, one line each."""


def detect_format(path: Path) -> Format:
    if path.is_dir():
        if (path / "Chart.yaml").is_file():
            return "helm"
        if any((path / name).is_file() for name in KUSTOMIZATION_FILES):
            return "kustomize"
        return "yaml"
    if path.name.endswith(CHART_ARCHIVE_SUFFIXES) or path.name == "Chart.yaml":
        return "helm"
    if path.name in KUSTOMIZATION_FILES:
        return "kustomize"
    return "yaml"


def normalize(
    source: Path | bytes, options: NormalizeOptions = NormalizeOptions()
) -> NormalizedSource:
    """Read `source` (a path, or the bytes of a YAML stream or chart archive) into a Taskset,
    with the taskset spec beside it (`fleetbus.yaml`) and `options.settings` applied."""
    file_settings: dict[str, Any] = {}
    label = options.settings_label
    if isinstance(source, Path) and source.exists():
        file_settings, file_label = settings_beside(source)
        label = file_label or label
    settings = merge_settings(file_settings, options.settings, options.settings_label)
    normalized = _normalize_source(source, options)
    if not settings and not has_setting_annotations(normalized.taskset):
        return normalized
    return dataclasses.replace(
        normalized, taskset=apply_settings(normalized.taskset, settings, label)
    )


def _normalize_source(source: Path | bytes, options: NormalizeOptions) -> NormalizedSource:
    namespace = check_name("namespace", options.namespace)
    name = check_name("taskset", options.name) if options.name is not None else None
    if isinstance(source, bytes):
        return _normalize_bytes(source, options, name, namespace)
    if not source.exists():
        raise SourceNotFound(f"{source} does not exist")
    chosen = options.format or detect_format(source)
    if chosen == "helm":
        return _normalize_chart(source, options, name, namespace)
    _refuse_values(options, chosen)
    _refuse_capabilities(options, chosen)
    if chosen == "kustomize":
        directory = source if source.is_dir() else source.parent
        documents = read_kustomization(directory, timeout=options.kustomize_timeout)
        return _from_documents(
            documents, "kustomize", name, namespace, directory, f"kustomize build of {directory}"
        )
    return _from_documents(read_yaml_path(source), "yaml", name, namespace, source, str(source))


def _refuse_values(options: NormalizeOptions, chosen: Format) -> None:
    if options.values:
        raise UnsupportedSource(
            f"values apply to Helm charts only, and this source is {chosen}; "
            "use a Kustomize overlay or patches to change it"
        )


def _refuse_capabilities(options: NormalizeOptions, chosen: Format) -> None:
    if not options.capabilities.is_default:
        raise UnsupportedSource(
            f"--kube-version and --api-versions apply to Helm charts only, and this source is "
            f"{chosen}"
        )


def _normalize_bytes(
    data: bytes, options: NormalizeOptions, name: str | None, namespace: str
) -> NormalizedSource:
    chosen = options.format or ("helm" if data.startswith(GZIP_MAGIC) else "yaml")
    if chosen == "kustomize":
        raise UnsupportedSource("a Kustomize overlay must be given as a directory, not a stream")
    if chosen == "helm":
        return _render_chart(data, options, name, namespace, "the chart archive")
    _refuse_values(options, chosen)
    _refuse_capabilities(options, chosen)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UnsupportedSource(f"{STDIN_LABEL} is not UTF-8 text (byte {e.start})") from e
    if name is None:
        raise UnsupportedSource("a taskset read from a stream needs a name: pass --name")
    documents = parse_documents(text, STDIN_LABEL)
    return _from_documents(documents, "yaml", name, namespace, None, STDIN_LABEL)


def _normalize_chart(
    path: Path, options: NormalizeOptions, name: str | None, namespace: str
) -> NormalizedSource:
    # Imported here: the Helm engine is a large native library, loaded only for charts.
    from normalizer import helm

    if path.name == "Chart.yaml":
        path = path.parent
    return _render_chart(helm.chart_archive_of(path), options, name, namespace, str(path))


def _render_chart(
    archive: bytes, options: NormalizeOptions, name: str | None, namespace: str, label: str
) -> NormalizedSource:
    from normalizer import helm

    values = merge_values(options.values)
    built = helm.render_archive(
        archive,
        values,
        name=name,
        namespace=namespace,
        label=label,
        capabilities=options.capabilities,
        previous=options.previous,
    )
    return NormalizedSource(built.taskset, archive, values, built.left_out, built.notes)


def _from_documents(
    documents: Sequence[SourceDocument],
    chosen: Format,
    name: str | None,
    namespace: str,
    path: Path | None,
    label: str,
) -> NormalizedSource:
    if name is None:
        assert path is not None, "stream sources are named by the caller"
        resolved = path.resolve()
        stem = resolved.name if resolved.is_dir() else resolved.name.split(".")[0]
        name = taskset_name_from(stem, f"the name of {path}")
    source = SourceInfo(format=chosen, digest=source_digest(documents))
    built: BuiltTaskset = build_taskset(
        name=name, namespace=namespace, documents=documents, source=source, source_label=label
    )
    return NormalizedSource(built.taskset, None, {}, built.left_out, built.notes)


def source_digest(documents: Sequence[SourceDocument]) -> str:
    """The digest of a YAML or Kustomize source: its objects as a set, whatever their layout.

    Key order, formatting, comments, file names and document order do not change it; any
    value of any object does.
    """
    return digest_of(sorted(canonical_json(document.manifest).decode() for document in documents))
