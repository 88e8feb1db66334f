"""Helm charts, rendered in-process by Helm's own engine (helm-python-sdk), into Tasksets.

This is the only module that imports `helm_python`: the native library is large (~65 MiB
resident) and belongs to the hub, never to an edge.

A chart is always rendered from its archive bytes, the same bytes that are published and kept
on the hub: what `fleetbus render` shows for a chart directory is exactly what re-rendering the
stored archive with the same values gives later (`render_chart_archive`, used to apply
per-cluster values). A chart directory is therefore packaged first, reproducibly: Helm's own
packaging (which honours `.helmignore` and includes subcharts), repacked with sorted entries,
zero timestamps and owners, so the same files always give the same archive and the same digest.

Rendering is Helm's install: `.Release.IsInstall` is true, the values are checked against
`values.schema.json`, `crds/` are read separately (they are not templates) and go first;
hooks and ordering are decided by `normalizer.builder`. NOTES.txt is not an object and is
dropped. Helm's errors come back as `NormalizerError`s naming the template and line, or the
values key.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python

from normalizer.builder import BuiltTaskset, build_taskset, taskset_name_from
from normalizer.documents import SourceDocument, parse_documents
from normalizer.errors import ChartNotLoadable, ChartRenderFailed, ValuesRejected
from taskset.digest import digest_bytes, digest_of
from taskset.errors import InvalidName
from taskset.model import SourceInfo, Taskset

MAX_RELEASE_NAME = 53
NOTES_FILE = "NOTES.txt"


def _one_line(message: str) -> str:
    """Helm's indented, multi-line messages as one line.

    Nested lines continue their parent after ': ', and list items ("- at '/replicas': ...",
    one per schema violation) are separated by '; '.
    """
    joined = ""
    for raw in message.splitlines():
        line = raw.strip()
        if not line:
            continue
        item = line.startswith("- ")
        line = line.removeprefix("- ").strip()
        if not joined:
            joined = line
        elif joined.endswith(":"):
            joined += " " + line
        else:
            joined += ("; " if item else ": ") + line
    return joined


def _detail(error: helm_python.HelmError) -> str:
    return _one_line(str(getattr(error, "detail", "") or error))


def reproducible_archive(archive: bytes) -> bytes:
    """The same chart archive with sorted entries, zero mtimes and owners, gzip without mtime."""
    entries: list[tuple[str, int, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as source:
            for member in source.getmembers():
                if not member.isfile():
                    continue
                handle = source.extractfile(member)
                if handle is None:
                    continue
                mode = 0o755 if member.mode & 0o111 else 0o644
                entries.append((member.name, mode, handle.read()))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ChartNotLoadable(f"the chart archive is not a readable .tgz: {e}") from e
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as target,
    ):
        for name, mode, data in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            target.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def package_chart_directory(directory: Path) -> bytes:
    """A chart directory as a reproducible .tgz (see the module docstring)."""
    try:
        chart = helm_python.Chart.load(directory)
    except helm_python.HelmError as e:
        raise ChartNotLoadable(
            f"{directory} is not a Helm chart Helm can load: {_detail(e)}"
        ) from e
    with chart, tempfile.TemporaryDirectory(prefix="fleetbus-chart-") as scratch:
        try:
            saved = Path(chart.save(scratch))
        except helm_python.HelmError as e:
            raise ChartNotLoadable(f"cannot package the chart in {directory}: {_detail(e)}") from e
        return reproducible_archive(saved.read_bytes())


def chart_archive_of(path: Path) -> bytes:
    """The archive bytes of a chart given as a directory or as a .tgz file."""
    if path.is_dir():
        return package_chart_directory(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ChartNotLoadable(f"cannot read the chart archive {path}: {e.strerror or e}") from e


def check_release_name(name: str) -> str:
    """`name` if Helm accepts it as a release name (at most 53 characters, DNS-1123)."""
    if len(name) > MAX_RELEASE_NAME:
        raise InvalidName(
            "Helm release",
            name,
            f"it is {len(name)} characters long and Helm allows at most {MAX_RELEASE_NAME}; "
            "choose a shorter taskset name",
        )
    try:
        helm_python.validate_release_name(name)
    except helm_python.HelmError as e:
        raise InvalidName("Helm release", name, _detail(e)) from e
    return name


def _missing_dependencies(chart: helm_python.Chart) -> list[str]:
    declared = chart.metadata.get("dependencies") or []
    loaded = {str(dependency.get("name")) for dependency in chart.dependencies}
    return sorted(
        str(dependency.get("name"))
        for dependency in declared
        if isinstance(dependency, dict) and str(dependency.get("name")) not in loaded
    )


def render_archive(
    archive: bytes,
    values: Mapping[str, Any],
    *,
    name: str | None,
    namespace: str,
    label: str = "the chart",
) -> BuiltTaskset:
    """Render the chart in `archive` as release `name` in `namespace` into a Taskset.

    Without a `name`, the taskset (and release) is named after the chart.
    """
    try:
        chart = helm_python.Chart.load_archive(archive)
    except helm_python.HelmError as e:
        raise ChartNotLoadable(f"{label} is not a Helm chart Helm can load: {_detail(e)}") from e
    with chart:
        chart_name, chart_version = chart.name, chart.version
        if name is None:
            name = taskset_name_from(chart_name, f"the chart name of {label}")
        check_release_name(name)
        missing = _missing_dependencies(chart)
        if missing:
            raise ChartNotLoadable(
                f"Helm chart {chart_name} declares dependencies that are not in its charts/ "
                f"directory: {', '.join(missing)}; run `helm dependency build` first"
            )
        try:
            rendered = chart.render(dict(values), name=name, namespace=namespace, is_install=True)
        except helm_python.HelmValuesError as e:
            raise ValuesRejected(
                f"values rejected by Helm chart {chart_name}'s values.schema.json: {_detail(e)}"
            ) from e
        except helm_python.HelmError as e:
            raise ChartRenderFailed(
                f"Helm chart {chart_name} failed to render: {_detail(e)}"
            ) from e
        crds = chart.crds
    documents: list[SourceDocument] = []
    for template in sorted(rendered):
        if template.rsplit("/", 1)[-1] == NOTES_FILE:
            continue
        documents.extend(parse_documents(rendered[template], f"{template} (rendered)"))
    chart_crds: list[SourceDocument] = []
    for crd in sorted(crds, key=lambda entry: entry["filename"]):
        chart_crds.extend(parse_documents(crd["data"], crd["filename"]))
    address = digest_bytes(archive)
    source = SourceInfo(
        format="helm",
        digest=address,
        chart_name=chart_name,
        chart_version=chart_version,
        values_digest=digest_of(dict(values)),
        chart_archive=address,
    )
    return build_taskset(
        name=name,
        namespace=namespace,
        documents=documents,
        leading_crds=chart_crds,
        source=source,
        source_label=f"Helm chart {chart_name}",
    )


def render_chart_archive(
    archive_bytes: bytes, values: Mapping[str, Any], name: str, namespace: str
) -> Taskset:
    """Re-render a published chart archive with other values (e.g. one cluster's overrides)."""
    return render_archive(archive_bytes, values, name=name, namespace=namespace).taskset
