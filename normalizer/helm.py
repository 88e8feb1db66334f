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
values key. What the install would see is followed closely:

- the rendered templates are split into objects as Helm splits them, and read with
  Kubernetes' YAML meaning (`normalizer.documents`, `normalizer.kubeyaml`);
- `crds/` are read by the engine's own YAML reader, as Helm reads them;
- the cluster the templates see (`.Capabilities`) is Helm's default unless the caller names
  one (`normalizer.capabilities`); a note says when templates consulted the default;
- a chart whose templates generate values is rendered twice, the second time as a probe of
  the templates whose output can differ where those can be told (`normalizer.probe`), and
  what differs is named, or, given the version published before, kept
  (`normalizer.determinism`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import tarfile
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import helm_python
import msgspec
import orjson
from helm_python import _native as helm_native
from isal import igzip, isal_zlib

from normalizer.builder import BuiltTaskset, build_taskset, taskset_name_from
from normalizer.capabilities import (
    DEFAULT_CAPABILITIES,
    HELM_DEFAULT_KUBE_VERSION,
    Capabilities,
)
from normalizer.determinism import (
    UnstableField,
    calls_a_generating_function,
    describe_unstable,
    keep_previous,
    unstable_fields,
)
from normalizer.documents import (
    SourceDocument,
    parse_documents,
    parse_rendered_template,
)
from normalizer.errors import (
    ChartNotLoadable,
    ChartRenderFailed,
    NormalizerError,
    RegenerationRefused,
    UnsupportedSource,
    ValuesRejected,
)
from normalizer.fastyaml import json_text_of
from normalizer.probe import (
    ChartTemplates,
    TplText,
    copy_name,
    is_template_file,
    tpl_text,
)
from normalizer.tar_reading import tar_files, tarfile_files
from normalizer.taskset_spec import apply_settings, has_setting_annotations
from taskset.capabilities import RenderContext
from taskset.digest import digest_bytes, digest_of
from taskset.errors import InvalidName
from taskset.model import ObjectRef, SourceInfo, Taskset

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


def _missing_dependencies(metadata: Mapping[str, Any], chart: helm_python.Chart) -> list[str]:
    """The dependencies Chart.yaml (`metadata`) declares that `chart` did not load."""
    declared = metadata.get("dependencies") or []
    if not declared:
        return []
    loaded = {str(dependency.get("name")) for dependency in chart.dependencies}
    return sorted(
        str(dependency.get("name"))
        for dependency in declared
        if isinstance(dependency, dict) and str(dependency.get("name")) not in loaded
    )


CAPABILITIES_TEMPLATE = re.compile(r"\.Capabilities\.(APIVersions|KubeVersion)")
RELEASE_TEMPLATE = re.compile(r"\.Release\.(IsUpgrade|IsInstall|Revision)")


@dataclass(frozen=True)
class _Templates:
    """What the chart's templates (subcharts included) do that the render must know."""

    consult_capabilities: tuple[str, ...]
    generate_values: tuple[str, ...]
    """The first template found calling a generating function, if one does: the scan stops
    there, since one is enough for the chart to be rendered twice."""
    consult_release: tuple[str, ...] = ()

    @property
    def consults(self) -> list[str]:
        """What differs per cluster that the templates read (`SourceInfo.consults`)."""
        return [
            what
            for what, templates in (
                ("capabilities", self.consult_capabilities),
                ("release", self.consult_release),
            )
            if templates
        ]


_INFLATE_ERROR = cast(type[Exception], isal_zlib.error)
"""What ISA-L's inflate raises for bytes that are not gzip (its stub calls it an instance)."""

MAX_UNPACKED_ARCHIVE = 128 * 1024 * 1024
"""More than Helm loads (100 MiB unpacked): a larger archive is not unpacked here."""


def _unpacked(archive: bytes) -> bytes:
    """A .tgz's tar bytes, refusing to grow beyond `MAX_UNPACKED_ARCHIVE`.

    The usual archive is one gzip member: its bytes are returned as they come, not copied."""
    members: list[bytes] = []
    size = 0
    rest = archive
    while rest.strip(b"\0"):  # gzip members, then perhaps zero padding
        member = isal_zlib.decompressobj(wbits=31)
        members.append(member.decompress(rest, MAX_UNPACKED_ARCHIVE + 1 - size))
        size += len(members[-1])
        if size > MAX_UNPACKED_ARCHIVE or member.unconsumed_tail:
            raise ValueError(f"it unpacks to more than {MAX_UNPACKED_ARCHIVE // 2**20} MiB")
        if not member.eof:
            raise EOFError("the archive is cut short")
        rest = member.unused_data
    return members[0] if len(members) == 1 else b"".join(members)


def archive_files(archive: bytes) -> list[tuple[str, bytes]]:
    """Every regular file of a chart archive as (path, bytes), unpacked once in memory."""
    stream = _unpacked(archive)
    read = tar_files(stream)
    return read if read is not None else tarfile_files(stream)


def _scan_templates(files: Sequence[tuple[str, bytes]]) -> _Templates:
    capabilities: list[str] = []
    generating: list[str] = []
    release: list[str] = []
    for name, data in files:
        if "/templates/" not in name:
            continue
        text = data.decode("utf-8", errors="replace")
        if CAPABILITIES_TEMPLATE.search(text):
            capabilities.append(name)
        if not generating and calls_a_generating_function(text):
            generating.append(name)
        if RELEASE_TEMPLATE.search(text):
            release.append(name)
    return _Templates(
        tuple(sorted(capabilities)), tuple(sorted(generating)), tuple(sorted(release))
    )


@dataclass(frozen=True)
class ReleaseMode:
    """`.Release.IsInstall` / `.IsUpgrade` / `.Revision` for a render (Helm's install: 1)."""

    is_upgrade: bool = False
    revision: int = 1


INSTALL = ReleaseMode()


def _render(
    chart: helm_python.Chart,
    values: Mapping[str, Any],
    name: str,
    namespace: str,
    capabilities: Capabilities,
    release: ReleaseMode = INSTALL,
) -> dict[str, str]:
    # The native call as `Chart.render` makes it, with more options: helm-python-sdk's render
    # takes the capabilities as options of the native call, which its Python wrapper does not
    # expose yet; and its megabytes of output are read with orjson.
    options: dict[str, object] = {"name": name, "namespace": namespace, "is_install": True}
    if not capabilities.is_default or release != INSTALL:
        options.update(
            is_install=not release.is_upgrade,
            is_upgrade=release.is_upgrade,
            revision=release.revision,
        )
        options.update(capabilities.render_options())
    payload = helm_native.call_string(
        "helm_render", chart._raw(), json.dumps(dict(values)), json.dumps(options)
    )
    rendered: dict[str, str] = orjson.loads(payload)
    return rendered


def _rendered_documents(rendered: Mapping[str, str]) -> list[SourceDocument]:
    documents: list[SourceDocument] = []
    for template in sorted(rendered):
        if template.rsplit("/", 1)[-1] == NOTES_FILE:
            continue
        documents.extend(parse_rendered_template(rendered[template], f"{template} (rendered)"))
    return documents


_CRD_CACHE: OrderedDict[bytes, bytes] = OrderedDict()
CRD_CACHE_FILES = 64
"""CRD files kept parsed (as JSON) by the digest of their text: charts re-rendered with other
values (per-cluster overrides) keep the same `crds/`, often megabytes of YAML."""
_CRD_FILE = re.compile(
    r"(?P<root>[^/]+)/(?:charts/(?P<owner>[^/]+)/)?(?P<nested>charts/.*/)?crds/.+\.(?:yaml|yml|json)"
)
"""A `crds/` file Helm may install (Helm's `CRDObjects`: the chart's and its subcharts')."""
_PACKAGED_SUBCHART = re.compile(r"[^/]+/charts/[^/]+\.tgz")


@dataclass(frozen=True)
class _CrdFile:
    owner: str
    """The subchart directory under `charts/` it belongs to; "" for the chart's own."""
    filename: str
    key: bytes
    """The digest of its text."""


@dataclass(frozen=True)
class ArchiveIndex:
    """What a render keeps of an archive it unpacked, by archive digest: a re-render with other
    values (per-cluster overrides) need not unpack it again."""

    templates: _Templates
    root: str
    crd_files: tuple[_CrdFile, ...]
    subcharts: frozenset[str]
    plain: bool
    """Every subchart is an unpacked directory whose own subcharts hold no `crds/`: which
    files Helm installs follows from which subcharts are enabled."""
    probe: _ProbeSource | None = None
    """For a plain archive whose templates generate values: what a probe render needs."""

    def installed_crds(self, chart_name: str, enabled: Sequence[str]) -> list[_CrdFile] | None:
        """The `crds/` files Helm installs with the enabled subcharts, or None if the archive
        does not show them plainly (Helm is then asked)."""
        if not self.plain or self.root != chart_name or not set(enabled) <= self.subcharts:
            return None
        return [crd for crd in self.crd_files if not crd.owner or crd.owner in enabled]


@dataclass(frozen=True)
class _ProbeSource:
    """An archive's templates, read, and the files a probe chart is made of
    (`normalizer.probe`)."""

    templates: ChartTemplates
    texts: TplText
    """What the texts of the chart that `tpl` may render do (its default values, its other
    files when a template reads them, its templates' strings)."""
    files: tuple[tuple[str, bytes], ...]


_VALUES_FILE = re.compile(r"[^/]+(?:/charts/[^/]+)*/values\.yaml")


_ANY_TEXT = TplText(varies=True, changes_state=True, names_template=True)
"""What a text that cannot be read may do."""


def _values_tpl_text(data: bytes) -> TplText:
    """What the strings of a chart's default values do rendered by `tpl` (comments, which
    hold examples, are not values). Any YAML reader reads the same strings; rapidyaml is the
    fast one, and a file it cannot read may do anything."""
    if b"{{" not in data:
        return TplText()
    written = json_text_of(data)
    if written is None:
        return _ANY_TEXT
    return tpl_text(written)


def _probe_source(files: Sequence[tuple[str, bytes]]) -> _ProbeSource:
    templates = ChartTemplates(
        (name, data.decode("utf-8", errors="replace"))
        for name, data in files
        if is_template_file(name)
    )
    reads_files = templates.read_files
    texts = templates.template_text
    for name, data in files:
        if is_template_file(name):
            continue
        if _VALUES_FILE.fullmatch(name):
            texts |= _values_tpl_text(data)
        elif reads_files and b"{{" in data and b"\0" not in data:  # text, not binary
            texts |= tpl_text(data.decode("utf-8", errors="replace"))
    # kept (in the archive index) are only the files a probe may hold, whatever the values
    plans = [
        templates.probe(TplText(varies, changes))
        for varies in (False, True)
        for changes in (False, True)
    ]
    return _ProbeSource(
        templates=templates,
        texts=texts,
        files=tuple(
            (name, data)
            for name, data in files
            if any(plan is not None and plan.keeps(name) for plan in plans)
        ),
    )


_PROBES: OrderedDict[tuple[str, TplText], bytes | None] = OrderedDict()
PROBE_ARCHIVES = 16


def _tpl_texts(source: _ProbeSource, values: Mapping[str, Any]) -> TplText:
    """What the texts `tpl` may render do: the chart's, and the values given."""
    try:
        return source.texts | tpl_text(orjson.dumps(dict(values)).decode())
    except orjson.JSONEncodeError:  # not JSON's kinds of values: whatever they hold may run
        return _ANY_TEXT


def _probe_archive(address: str, source: _ProbeSource, values: Mapping[str, Any]) -> bytes | None:
    """The archive of the probe chart for a render with `values`, or None when the whole
    chart must be rendered again (`normalizer.probe`); kept by archive and by what the texts
    `tpl` renders may do."""
    tpl = _tpl_texts(source, values)
    key = (address, tpl)
    if key in _PROBES:
        _PROBES.move_to_end(key)
        return _PROBES[key]
    plan = source.templates.probe(tpl)
    archive: bytes | None = None
    if plan is not None:
        archive = _tar_gz([(name, data) for name, data in source.files if plan.keeps(name)])
    _PROBES[key] = archive
    while len(_PROBES) > PROBE_ARCHIVES:
        _PROBES.popitem(last=False)
    return archive


def probe_chart_archive(archive: bytes, values: Mapping[str, Any]) -> bytes | None:
    """The probe chart of `archive` for a render with `values` (`normalizer.probe`), or None
    when a second render must render the whole chart."""
    return _probe_archive(digest_bytes(archive), _probe_source(archive_files(archive)), values)


@dataclass(frozen=True)
class _WithCopies:
    """The chart with a copy of each template whose output can differ beside it
    (`ChartTemplates.copies`): rendered instead of the chart, one engine call gives what the
    chart renders and a second render of those templates."""

    archive: bytes
    copies: Mapping[str, str]
    """The original template of each copy, by the copy's name."""


_WITH_COPIES: OrderedDict[tuple[str, TplText], _WithCopies | None] = OrderedDict()


def _archive_with_copies(
    address: str, archive: bytes, source: _ProbeSource, values: Mapping[str, Any]
) -> _WithCopies | None:
    """The chart `archive` with copies for a render with `values`, or None when the copies
    could change what a template renders (the probe is then rendered on its own); kept like
    the probe's archive."""
    tpl = _tpl_texts(source, values)
    key = (address, tpl)
    if key in _WITH_COPIES:
        _WITH_COPIES.move_to_end(key)
        return _WITH_COPIES[key]
    copied = source.templates.copies(tpl)
    found: _WithCopies | None = None
    data = dict(source.files)
    if copied is not None and copied <= data.keys():
        names = {copy_name(name): name for name in sorted(copied)}
        found = _WithCopies(
            _archive_ahead(archive, [(copy, data[name]) for copy, name in names.items()]),
            names,
        )
    _WITH_COPIES[key] = found
    while len(_WITH_COPIES) > PROBE_ARCHIVES:
        _WITH_COPIES.popitem(last=False)
    return found


def _archive_ahead(archive: bytes, files: Sequence[tuple[str, bytes]]) -> bytes:
    """`archive` with `files` before its own: a gzip member holding their tar entries (with
    no end-of-archive blocks), then the archive's bytes as they are. A gzip reader reads
    members one after the other as one stream, and a tar reader reads entries until those
    blocks, so the chart is neither unpacked nor packed again."""
    if not files:
        return archive
    entries: list[bytes] = []
    for name, data in files:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        entries.append(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        entries.append(data + bytes(-len(data) % tarfile.BLOCKSIZE))
    return igzip.compress(b"".join(entries), compresslevel=1, mtime=0) + archive


def _split_copies(
    rendered: Mapping[str, str], copies: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]] | None:
    """What the chart renders, and what the copies render by their originals' names; None
    when a copy rendered without its original or the other way round."""
    again: dict[str, str] = {}
    for copy, original in copies.items():
        if (copy in rendered) != (original in rendered):
            return None
        if copy in rendered:
            again[original] = rendered[copy]
    return {t: text for t, text in rendered.items() if t not in copies}, again


def _tar_gz(files: Sequence[tuple[str, bytes]]) -> bytes:
    """Files as a .tgz for Helm to load (quickly: it is read once, in this process)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as target:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            target.addfile(info, io.BytesIO(data))
    return igzip.compress(buffer.getvalue(), compresslevel=1, mtime=0)


def index_archive(
    files: Sequence[tuple[str, bytes]], templates: _Templates | None = None
) -> ArchiveIndex:
    """What a render keeps of an archive's files (`templates`: their scan, if made)."""
    roots = {name.split("/", 1)[0] for name, _ in files}
    crds: list[_CrdFile] = []
    plain = len(roots) == 1
    subcharts: set[str] = set()
    for name, data in files:
        parts = name.split("/")
        if len(parts) == 4 and parts[1] == "charts" and parts[3] == "Chart.yaml":
            subcharts.add(parts[2])
        if _PACKAGED_SUBCHART.fullmatch(name):
            plain = False
        found = _CRD_FILE.fullmatch(name)
        if found is None:
            continue
        if found["nested"] is not None:
            plain = False
        crds.append(_CrdFile(found["owner"] or "", name, hashlib.sha256(data).digest()))
    if templates is None:
        templates = _scan_templates(files)
    return ArchiveIndex(
        templates=templates,
        root=next(iter(roots)) if len(roots) == 1 else "",
        crd_files=tuple(crds),
        subcharts=frozenset(subcharts),
        plain=plain,
        probe=_probe_source(files) if plain and templates.generate_values else None,
    )


ParsedCrds = dict[bytes, list[tuple[int, dict[str, Any]]]]
"""CRD files parsed during one render, by the digest of their text."""


def _cached_crd_file(key: bytes) -> list[tuple[int, dict[str, Any]]] | None:
    cached = _CRD_CACHE.get(key)
    if cached is None:
        return None
    _CRD_CACHE.move_to_end(key)
    return [(line, manifest) for line, manifest in orjson.loads(cached)]


def _parse_crd_file(key: bytes, filename: str, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    try:
        text, encoded = data.decode(), data
    except UnicodeDecodeError:
        text, encoded = data.decode("utf-8", errors="replace"), None
    parsed = [(d.line, d.manifest) for d in parse_documents(text, filename, encoded=encoded)]
    _CRD_CACHE[key] = orjson.dumps(parsed)
    while len(_CRD_CACHE) > CRD_CACHE_FILES:
        _CRD_CACHE.popitem(last=False)
    return parsed


def _read_crds_ahead(index: ArchiveIndex, files: Sequence[tuple[str, bytes]]) -> ParsedCrds:
    """Parse the archive's `crds/` files while the engine renders (those not in the cache).

    Which of them Helm installs is known only after the render (a disabled subchart's are
    not). A file that does not parse is left to be reported if Helm installs it."""
    data_of = dict(files)
    parsed: ParsedCrds = {}
    for crd in index.crd_files:
        if crd.key in _CRD_CACHE or crd.key in parsed or crd.filename not in data_of:
            continue
        try:
            parsed[crd.key] = _parse_crd_file(crd.key, crd.filename, data_of[crd.filename])
        except NormalizerError:
            continue
    return parsed


def _crd_documents(
    crds: Sequence[Mapping[str, str]], read_ahead: ParsedCrds
) -> list[SourceDocument]:
    """The documents of the `crds/` files Helm names (`Chart.crds`)."""
    documents: list[SourceDocument] = []
    for crd in sorted(crds, key=lambda entry: entry["filename"]):
        filename, data = crd["filename"], crd["data"].encode()
        key = hashlib.sha256(data).digest()
        parsed = read_ahead.pop(key, None)
        if parsed is None:
            parsed = _cached_crd_file(key)
        if parsed is None:
            parsed = _parse_crd_file(key, filename, data)
        documents.extend(SourceDocument(filename, line, manifest) for line, manifest in parsed)
    return documents


def _indexed_crd_documents(
    crds: Sequence[_CrdFile], read_ahead: ParsedCrds
) -> list[SourceDocument] | None:
    """The documents of the `crds/` files the archive index names, if all are parsed."""
    documents: list[SourceDocument] = []
    for crd in sorted(crds, key=lambda entry: entry.filename):
        parsed = read_ahead.pop(crd.key, None)
        if parsed is None:
            parsed = _cached_crd_file(crd.key)
        if parsed is None:
            return None
        documents.extend(SourceDocument(crd.filename, line, manifest) for line, manifest in parsed)
    return documents


_INDEXED: OrderedDict[str, ArchiveIndex] = OrderedDict()
INDEXED_ARCHIVES = 64


def forget_chart_caches() -> None:
    """Empty the parsed-CRD and template-scan caches (a benchmark's cold render starts from
    nothing)."""
    _CRD_CACHE.clear()
    _INDEXED.clear()
    _PROBES.clear()
    _WITH_COPIES.clear()


def _capabilities_note(templates: _Templates, capabilities: Capabilities) -> list[str]:
    if not capabilities.is_default or not templates.consult_capabilities:
        return []
    shown = ", ".join(templates.consult_capabilities[:3])
    more = len(templates.consult_capabilities) - 3
    return [
        f"{len(templates.consult_capabilities)} templates consult .Capabilities ({shown}"
        + (f" and {more} more" if more > 0 else "")
        + f"); they were rendered for Helm's default cluster: Kubernetes "
        f"{HELM_DEFAULT_KUBE_VERSION} with built-in API versions only; pass --kube-version and "
        "--api-versions (e.g. monitoring.coreos.com/v1) as your clusters have them"
    ]


def _previous_objects(previous: Taskset) -> dict[ObjectRef, dict[str, Any]]:
    """The previous version's objects, found by their identity as rendered (no namespace where
    the taskset's namespace was filled in)."""
    objects: dict[ObjectRef, dict[str, Any]] = {}
    for phase in (previous.init, previous.install, previous.post_install, previous.pre_delete):
        for step in phase:
            ref = ObjectRef.of(step.object)
            objects[ref] = step.object
            if ref.namespace == previous.namespace:
                objects[msgspec.structs.replace(ref, namespace="")] = step.object
    return objects


@contextmanager
def _translated_errors(chart_name: str) -> Iterator[None]:
    """Helm's render errors as the normalizer's, naming the template and line."""
    try:
        yield
    except helm_python.HelmValuesError as e:
        raise ValuesRejected(
            f"values rejected by Helm chart {chart_name}'s values.schema.json: {_detail(e)}"
        ) from e
    except helm_python.HelmInvalidArgError as e:
        raise UnsupportedSource(f"Helm refused the render options: {_detail(e)}") from e
    except helm_python.HelmError as e:
        raise ChartRenderFailed(f"Helm chart {chart_name} failed to render: {_detail(e)}") from e


def _render_archive_again(
    archive: bytes,
    values: Mapping[str, Any],
    name: str,
    namespace: str,
    capabilities: Capabilities,
    release: ReleaseMode = INSTALL,
) -> dict[str, str]:
    with helm_python.Chart.load_archive(archive) as chart:
        return _render(chart, values, name, namespace, capabilities, release)


def _load_archive(archive: bytes, label: str) -> helm_python.Chart:
    try:
        return helm_python.Chart.load_archive(archive)
    except helm_python.HelmError as e:
        raise ChartNotLoadable(f"{label} is not a Helm chart Helm can load: {_detail(e)}") from e


def _render_and_subcharts(
    chart: helm_python.Chart,
    values: Mapping[str, Any],
    name: str,
    namespace: str,
    capabilities: Capabilities,
    release: ReleaseMode,
) -> tuple[dict[str, str], list[str]]:
    """The rendered templates, and the subcharts the render enabled (whose `crds/` Helm
    installs: a disabled subchart's are not)."""
    rendered = _render(chart, values, name, namespace, capabilities, release)
    return rendered, [str(dependency.get("name")) for dependency in chart.dependencies]


def _metadata_text(metadata: Mapping[str, Any], key: str) -> str:
    """A Chart.yaml field as `helm_python.Chart.name` and `.version` give it."""
    value = metadata.get(key)
    return str(value) if value is not None else ""


@dataclass(frozen=True)
class _Loaded:
    chart: helm_python.Chart
    """Open: the caller closes it."""
    name: str
    chart_name: str
    chart_version: str
    rendered: dict[str, str]
    enabled: list[str]


def _load_and_render(
    archive: bytes,
    label: str,
    named: Future[str],
    values: Mapping[str, Any],
    name: str | None,
    namespace: str,
    capabilities: Capabilities,
    release: ReleaseMode,
) -> _Loaded:
    """Load the chart, check it and its release name (given in `named` as soon as known, or
    the error), and render it."""
    chart: helm_python.Chart | None = None
    try:
        chart = _load_archive(archive, label)
        # each native call hands the GIL back and waits to take it again, while the caller's
        # thread reads the archive: Chart.yaml is asked for once
        metadata = chart.metadata
        chart_name = _metadata_text(metadata, "name")
        if name is None:
            name = taskset_name_from(chart_name, f"the chart name of {label}")
        check_release_name(name)
        missing = _missing_dependencies(metadata, chart)
        if missing:
            raise ChartNotLoadable(
                f"{label}: Chart.yaml of Helm chart {chart_name} declares dependencies "
                f"that are not in its charts/ directory: {', '.join(missing)}; "
                "run `helm dependency build` first"
            )
        named.set_result(name)
        with _translated_errors(chart_name):
            rendered, enabled = _render_and_subcharts(
                chart, values, name, namespace, capabilities, release
            )
    except BaseException as e:
        if not named.done():
            named.set_exception(e)
        if chart is not None:
            chart.close()
        raise
    return _Loaded(chart, name, chart_name, _metadata_text(metadata, "version"), rendered, enabled)


MAX_EXTRA_RENDERS = 3
"""Renders of the same inputs compared before a generated value's frame is judged changed."""


def _keep_previous_values(
    documents: Sequence[SourceDocument],
    others: list[list[SourceDocument]],
    unstable: Sequence[UnstableField],
    previous: Mapping[ObjectRef, Mapping[str, Any]],
    *,
    render_again: Callable[[], list[SourceDocument]],
    chart_name: str,
) -> list[dict[str, Any]]:
    """`keep_previous`, rendering once more (up to `MAX_EXTRA_RENDERS`) before a refusal stands,
    so characters that renders share by chance are not taken for the text around a value."""
    while True:
        try:
            return keep_previous(
                [d.manifest for d in documents],
                [[d.manifest for d in other] for other in others],
                unstable,
                previous,
            )
        except RegenerationRefused:
            if len(others) >= MAX_EXTRA_RENDERS:
                raise
            with _translated_errors(chart_name):
                others.append(render_again())


_FirstRender = tuple[_Loaded, dict[str, str] | None]
"""The chart's render, and the second render of the templates whose output can differ when
it came from the same engine call (`_WithCopies`)."""


def _close_when_loaded(loading: Future[_FirstRender]) -> None:
    """Wait for the engine's load and render, and close the chart it loaded, if it did: the
    render is given up (the error that stops it is on its way)."""
    wait([loading])
    if loading.exception() is None:
        loading.result()[0].chart.close()


def _indexed(address: str) -> ArchiveIndex | None:
    index = _INDEXED.get(address)
    if index is not None:
        _INDEXED.move_to_end(address)
    return index


def _keep_index(address: str, index: ArchiveIndex) -> None:
    _INDEXED[address] = index
    while len(_INDEXED) > INDEXED_ARCHIVES:
        _INDEXED.popitem(last=False)


def render_archive(
    archive: bytes,
    values: Mapping[str, Any],
    *,
    name: str | None,
    namespace: str,
    label: str = "the chart",
    capabilities: Capabilities = DEFAULT_CAPABILITIES,
    previous: Taskset | None = None,
    release: ReleaseMode = INSTALL,
) -> BuiltTaskset:
    """Render the chart in `archive` as release `name` in `namespace` into a Taskset.

    Without a `name`, the taskset (and release) is named after the chart. A chart that
    generates values while rendering is rendered twice to name the fields that differ; with a
    `previous` version, those fields keep its values (`normalizer.determinism`).
    """
    address = digest_bytes(archive)
    # The engine runs natively without the GIL: while it loads and renders the chart, this
    # thread reads the archive's crds/ ahead (and, the first time, unpacks and indexes it). A
    # chart that generates values is rendered a second time: in the same engine call, with
    # copies of the templates whose output can differ (`_WithCopies`), once its templates are
    # read; or else meanwhile, as a probe when it can be (`normalizer.probe`), on its own chart
    # handle, since a render changes the chart it is given.
    named: Future[str] = Future()

    def first_render(with_copies: _WithCopies | None) -> _FirstRender:
        """The chart's render; with copies, the copies' too. Where the copies do not render
        as their originals would (a copy, rendered first, failing, or only one of the two
        rendering), the chart is rendered alone: it says what is wrong with it."""
        if with_copies is not None and with_copies.archive is archive:
            loaded = _load_and_render(
                archive, label, named, values, name, namespace, capabilities, release
            )
            return loaded, {}
        if with_copies is not None:
            attempt: Future[str] = Future()
            try:
                loaded = _load_and_render(
                    with_copies.archive,
                    label,
                    attempt,
                    values,
                    name,
                    namespace,
                    capabilities,
                    release,
                )
            except (NormalizerError, InvalidName):
                pass
            else:
                split = _split_copies(loaded.rendered, with_copies.copies)
                if split is not None:
                    named.set_result(loaded.name)
                    return dataclasses.replace(loaded, rendered=split[0]), split[1]
                loaded.chart.close()
        loaded = _load_and_render(
            archive, label, named, values, name, namespace, capabilities, release
        )
        return loaded, None

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="helm") as pool:
        loading: Future[_FirstRender] | None = None
        files: list[tuple[str, bytes]] = []
        try:
            index = _indexed(address)
            if index is None:
                try:
                    files = archive_files(archive)
                except (tarfile.TarError, OSError, EOFError, _INFLATE_ERROR, ValueError) as e:
                    loading = pool.submit(first_render, None)
                    wait([loading])
                    if isinstance(loading.exception(), ChartNotLoadable):
                        loading.result()  # Helm's own word on an archive it cannot load first
                    raise ChartNotLoadable(f"{label} is not a readable chart archive: {e}") from e
                scanned = _scan_templates(files)
                if not scanned.generate_values:  # the engine need not wait for the index
                    loading = pool.submit(first_render, None)
                index = index_archive(files, scanned)
                _keep_index(address, index)
            with_copies = None
            if index.probe is not None and index.templates.generate_values:
                with_copies = _archive_with_copies(address, archive, index.probe, values)
            if loading is None:
                loading = pool.submit(first_render, with_copies)
        except BaseException:
            if loading is not None:
                _close_when_loaded(loading)
            raise
        templates = index.templates
        probe_source = index.probe

        def render_again() -> dict[str, str]:
            """The probe chart's render, or the whole chart's when there is no probe (or the
            probe, against expectation, does not render)."""
            release_name = named.result()
            probe_archive = (
                _probe_archive(address, probe_source, values) if probe_source is not None else None
            )
            if probe_archive is not None:
                with suppress(helm_python.HelmError):
                    return _render_archive_again(
                        probe_archive, values, release_name, namespace, capabilities, release
                    )
            return _render_archive_again(
                archive, values, release_name, namespace, capabilities, release
            )

        probe = (
            pool.submit(render_again) if templates.generate_values and with_copies is None else None
        )
        try:
            read_ahead = _read_crds_ahead(index, files)
        except BaseException:
            _close_when_loaded(loading)
            raise
        loaded, again = loading.result()
        name = loaded.name
        with loaded.chart as chart:
            chart_name, chart_version = loaded.chart_name, loaded.chart_version
            installed = index.installed_crds(chart_name, loaded.enabled)
            chart_crds = (
                _indexed_crd_documents(installed, read_ahead) if installed is not None else None
            )
            if chart_crds is None:
                chart_crds = _crd_documents(chart.crds, read_ahead)
        rendered = loaded.rendered
        documents = _rendered_documents(rendered)
        with _translated_errors(chart_name):
            if probe is not None:
                again = probe.result()
            elif templates.generate_values and again is None:
                again = render_again()
    notes = _capabilities_note(templates, capabilities)
    if again is not None:
        # a probe renders only some templates: those are compared
        changed = {template for template in again if rendered.get(template) != again[template]}
        first = [d for d in documents if d.source.removesuffix(" (rendered)") in changed]
        second = _rendered_documents({t: again[t] for t in changed})
        unstable = unstable_fields(
            [(d.where, d.manifest) for d in first], [(d.where, d.manifest) for d in second]
        )
        notes.extend(describe_unstable(unstable))
        if previous is not None and unstable:
            kept = _keep_previous_values(
                documents,
                [second],
                unstable,
                _previous_objects(previous),
                render_again=lambda: _rendered_documents(
                    {t: text for t, text in render_again().items() if t in changed}
                ),
                chart_name=chart_name,
            )
            documents = [
                SourceDocument(d.source, d.line, manifest)
                for d, manifest in zip(documents, kept, strict=True)
            ]
    source = SourceInfo(
        format="helm",
        digest=address,
        chart_name=chart_name,
        chart_version=chart_version,
        values_digest=digest_of(dict(values)),
        chart_archive=address,
        consults=templates.consults,
    )
    return build_taskset(
        name=name,
        namespace=namespace,
        documents=documents,
        leading_crds=chart_crds,
        source=source,
        source_label=f"Helm chart {chart_name}",
        notes=notes,
    )


def render_chart_archive(
    archive_bytes: bytes,
    values: Mapping[str, Any],
    name: str,
    namespace: str,
    previous: Taskset | None = None,
    context: RenderContext | None = None,
) -> Taskset:
    """Re-render a published chart archive with other values (e.g. one cluster's overrides).

    `previous` is the published version: generated values it holds are kept, not rotated, and
    the taskset spec it was published with (drift policy, adoption, Step Jobs) applies again.
    """
    capabilities = DEFAULT_CAPABILITIES
    release = INSTALL
    if context is not None:
        if context.kube_version or context.api_versions:
            capabilities = Capabilities(context.kube_version or None, context.api_versions)
        if context.is_upgrade is not None or context.revision is not None:
            release = ReleaseMode(
                is_upgrade=bool(context.is_upgrade), revision=context.revision or 1
            )
    taskset = render_archive(
        archive_bytes,
        values,
        name=name,
        namespace=namespace,
        previous=previous,
        capabilities=capabilities,
        release=release,
    ).taskset
    settings = previous.settings if previous is not None else {}
    if not settings and not has_setting_annotations(taskset):
        return taskset
    return apply_settings(taskset, settings, "the taskset's published settings")
