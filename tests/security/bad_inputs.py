"""A catalog of malformed sources: YAML, charts, archives and overlays that must be refused.

Each `BadSource` writes itself under a directory and names the path to hand to `fleetbus
render`/`publish` (or to upload to the API), and a fragment the error message must contain: the
message has to say what is wrong, not just that something is.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CONFIGMAP = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
CHART = b"apiVersion: v2\nname: %s\nversion: 0.1.0\n"


@dataclass(frozen=True)
class BadSource:
    id: str
    write: Callable[[Path], Path]
    """Creates the source under the given directory; returns the path to normalize."""
    expect: str
    """A fragment of the one-line error."""
    values: bytes | None = None
    """A Helm values file to pass along, if the case needs one."""


def yaml_file(text: bytes) -> Callable[[Path], Path]:
    def write(root: Path) -> Path:
        path = root / "source.yaml"
        path.write_bytes(text)
        return path

    return write


def chart_dir(
    name: str,
    templates: dict[str, bytes],
    *,
    files: dict[str, bytes] | None = None,
    chart_yaml: bytes | None = None,
) -> Callable[[Path], Path]:
    def write(root: Path) -> Path:
        chart = root / name
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_bytes(chart_yaml or CHART % name.encode())
        for file_name, text in templates.items():
            (chart / "templates" / file_name).write_bytes(text)
        for file_name, text in (files or {}).items():
            (chart / file_name).write_bytes(text)
        return chart

    return write


def tar_gz(entries: list[tuple[str, bytes | tuple[bytes, str]]]) -> bytes:
    """A .tgz; an entry's content may be (type, link target) for symlinks and hard links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def archive_file(data: Callable[[], bytes]) -> Callable[[Path], Path]:
    def write(root: Path) -> Path:
        path = root / "chart.tgz"
        path.write_bytes(data())
        return path

    return write


def gzip_bomb() -> bytes:
    """1 GiB of zeros in about 1 MiB of gzip."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([*(compressor.compress(zeros) for _ in range(1024)), compressor.flush()])


def kustomization(text: bytes) -> Callable[[Path], Path]:
    def write(root: Path) -> Path:
        overlay = root / "overlay"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_bytes(text)
        return overlay

    return write


def alias_bomb() -> bytes:
    """Nine lines of YAML that expand to 10^8 values (a "billion laughs")."""
    lines = [b"  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        refs = b", ".join([b"*l%d" % (level - 1)] * 10)
        lines.append(b"  l%d: &l%d [%s]" % (level, level, refs))
    return CONFIGMAP + b"data:\n" + b"\n".join(lines) + b"\n"


BAD_SOURCES: list[BadSource] = [
    BadSource("yaml-syntax-error", yaml_file(b"a: [1, 2\n"), "invalid YAML"),
    BadSource("yaml-document-not-a-mapping", yaml_file(b"- a\n- b\n"), "must be a mapping"),
    BadSource(
        "yaml-kind-missing", yaml_file(b"apiVersion: v1\nmetadata: {name: x}\n"), "kind is missing"
    ),
    BadSource(
        "yaml-apiversion-missing",
        yaml_file(b"kind: ConfigMap\nmetadata: {name: x}\n"),
        "apiVersion is missing",
    ),
    BadSource(
        "yaml-name-missing",
        yaml_file(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"),
        "metadata.name is missing",
    ),
    BadSource(
        "yaml-invalid-object-name",
        yaml_file(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n"),
        "DNS-1123",
    ),
    BadSource(
        "yaml-invalid-object-namespace",
        yaml_file(b'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: "Bad NS"}\n'),
        "metadata.namespace",
    ),
    BadSource(
        "yaml-duplicate-object", yaml_file(CONFIGMAP + b"---\n" + CONFIGMAP), "more than once"
    ),
    BadSource(
        "yaml-unknown-phase",
        yaml_file(
            b"apiVersion: v1\nkind: ConfigMap\n"
            b"metadata: {name: a, annotations: {fleetbus.io/phase: nope}}\n"
        ),
        "unknown phase 'nope'",
    ),
    BadSource(
        "yaml-hook-weight-not-a-number",
        yaml_file(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, annotations: "
            b"{helm.sh/hook: pre-install, helm.sh/hook-weight: x}}\n"
        ),
        "hook-weight must be an integer",
    ),
    BadSource("yaml-alias-bomb", yaml_file(alias_bomb()), "expands to more than"),
    BadSource(
        "yaml-mapping-key-beyond-int64",
        yaml_file(CONFIGMAP + b"data: {9223372036854775808: n}\n"),
        "beyond int64",
    ),
    BadSource(
        "yaml-infinite-number", yaml_file(CONFIGMAP + b"data: {n: .inf}\n"), "JSON can carry"
    ),
    BadSource(
        "yaml-python-object-tag",
        yaml_file(CONFIGMAP + b"data: !!python/object/apply:os.system ['true']\n"),
        "unsupported YAML tag",
    ),
    BadSource("yaml-not-utf8", yaml_file(b"\xff\xfe\x00garbage"), "not UTF-8"),
    BadSource("yaml-no-objects", yaml_file(b"# only a comment\n---\n"), "no Kubernetes objects"),
    BadSource(
        "yaml-list-item-not-a-mapping",
        yaml_file(b"apiVersion: v1\nkind: List\nitems: [1]\n"),
        "item 0 of a List must be a mapping",
    ),
    BadSource(
        "chart-template-syntax-error",
        chart_dir("broken", {"cm.yaml": b"metadata: {name: {{ .Release.Name }\n"}),
        "failed to render",
    ),
    BadSource(
        "chart-required-value-missing",
        chart_dir(
            "needy",
            {"cm.yaml": b'name: {{ required "image.tag is required" .Values.image.tag }}\n'},
            files={"values.yaml": b"image: {}\n"},
        ),
        "image.tag is required",
    ),
    BadSource(
        "chart-template-fails",
        chart_dir("refuser", {"cm.yaml": b'{{ fail "this chart refuses" }}\n'}),
        "this chart refuses",
    ),
    BadSource(
        "chart-dependency-missing",
        chart_dir(
            "dependent",
            {"cm.yaml": CONFIGMAP},
            chart_yaml=CHART % b"dependent"
            + b"dependencies:\n- name: redis\n  version: 1.0.0\n  repository: https://x.invalid\n",
        ),
        "dependencies that are not in its charts/",
    ),
    BadSource(
        "chart-version-missing",
        chart_dir("unversioned", {"cm.yaml": CONFIGMAP}, chart_yaml=b"apiVersion: v2\nname: u\n"),
        "version is required",
    ),
    BadSource(
        "chart-values-violate-schema",
        chart_dir(
            "strict",
            {"cm.yaml": CONFIGMAP},
            files={
                "values.schema.json": b'{"type": "object", "properties": '
                b'{"replicas": {"type": "integer", "minimum": 1}}}'
            },
        ),
        "values.schema.json",
        values=b"replicas: 0\n",
    ),
    BadSource(
        "archive-path-traversal",
        archive_file(
            lambda: tar_gz(
                [
                    ("evil/Chart.yaml", CHART % b"evil"),
                    ("evil/templates/cm.yaml", CONFIGMAP),
                    ("evil/../../../escaped.yaml", CONFIGMAP),
                ]
            )
        ),
        "illegally references parent directory",
    ),
    BadSource(
        "archive-without-chart-yaml",
        archive_file(lambda: tar_gz([("evil/templates/cm.yaml", CONFIGMAP)])),
        "Chart.yaml file is missing",
    ),
    BadSource(
        "archive-gzip-of-garbage",
        archive_file(lambda: gzip.compress(b"not a tar archive", mtime=0)),
        "not a Helm chart",
    ),
    BadSource(
        "archive-not-gzip",
        archive_file(lambda: b"\x1f\x8bplain text pretending to be gzip"),
        "not a Helm chart",
    ),
    BadSource("archive-gzip-bomb", archive_file(gzip_bomb), "not a Helm chart"),
    BadSource(
        "kustomize-resource-outside-the-overlay",
        kustomization(b"resources:\n- " + b"../" * 40 + b"etc/hostname\n"),
        "is not in or below",
    ),
    BadSource(
        "kustomize-remote-scp-address-in-mixed-case",
        kustomization(b"resources:\n- Git@host:org/repo\n"),
        "resources[0] 'Git@host:org/repo' is refused: it holds '@'",
    ),
    BadSource(
        "kustomize-remote-host-without-scheme",
        kustomization(b"components:\n- GitHub.com/org/repo\n"),
        "components[0] 'GitHub.com/org/repo' is refused: it starts with a host name",
    ),
    BadSource(
        "kustomize-remote-patch-with-one-slash-scheme",
        kustomization(b"patches:\n- path: HTTPS:/host/x.yaml\n"),
        "patches[0].path 'HTTPS:/host/x.yaml' is refused: it holds ':'",
    ),
    BadSource(
        "kustomize-helm-charts",
        kustomization(b"helmCharts:\n- name: x\n  repo: https://charts.example\n"),
        "helmCharts is refused: inflating Helm charts inside Kustomize needs --enable-helm",
    ),
    BadSource(
        "kustomize-resource-missing",
        kustomization(b"resources:\n- missing.yaml\n"),
        "missing.yaml",
    ),
]
