"""The real-chart corpus normalizes to exactly what Helm installs and kubectl kustomize builds.

Every chart of `tests/corpus` is rendered by fleetbus and by Helm's own install (a client
dry-run of helm-python-sdk, into memory storage); Helm's release manifest is read by the Go
oracle (sigs.k8s.io/yaml), not by fleetbus. The objects must be the same, field for field;
the only difference allowed is the release namespace fleetbus writes into namespaced objects
that name none. Values a chart generates on every render (passwords, checksums of them) are
found by installing twice and are not compared. A failure lists each difference by object and
path. The same holds for every Kustomize example against `kubectl kustomize`.

Bad inputs made from the corpus (a missing dependency, `required`, `fail`, a template that
renders broken YAML, values that are not a mapping) each give one line naming the file and
line, a non-zero exit and no traceback.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python
import pytest

from normalizer import NormalizeOptions, normalize
from normalizer.determinism import differing_paths, path_text
from normalizer.documents import parse_documents_by_libyaml, split_helm_manifest
from normalizer.fastyaml import fast_documents
from normalizer.helm import archive_files, chart_archive_of, index_archive, render_archive
from tests.corpus_cases import CHARTS, KUSTOMIZATIONS, LARGEST_CHART, ChartCase
from tests.yaml_oracle import comparable, convert_with_oracle

Key = tuple[str, str, str, str]


def key_of(manifest: Mapping[str, Any], namespace: str) -> Key:
    metadata = manifest.get("metadata") or {}
    return (
        str(manifest.get("apiVersion")),
        str(manifest.get("kind")),
        str(metadata.get("namespace") or namespace),
        str(metadata.get("name")),
    )


def without_namespace(manifest: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The manifest without a `metadata.namespace` equal to the release namespace."""
    metadata = dict(manifest.get("metadata") or {})
    if metadata.get("namespace") in (namespace, None, ""):
        metadata.pop("namespace", None)
    return {**manifest, "metadata": metadata}


def oracle_objects(texts: Iterable[str]) -> list[dict[str, Any]]:
    documents = [text for text in texts if text.strip()]
    found: list[dict[str, Any]] = []
    for result in convert_with_oracle(documents):
        assert result.error is None, f"Go cannot read a document Helm wrote: {result.error}"
        if isinstance(result.value, dict):
            if result.value.get("kind") == "List":
                found.extend(result.value.get("items") or [])
            else:
                found.append(result.value)
    return found


def helm_install_manifest(case: ChartCase) -> str:
    config = helm_python.Config(storage_driver="memory", namespace=case.namespace)
    chart = helm_python.Chart.load(case.directory)
    with chart, config:
        release = config.install(
            chart, case.release, {}, namespace=case.namespace, dry_run="client"
        )
    manifest: str = release["manifest"]
    return manifest


def helm_installed_objects(case: ChartCase) -> list[dict[str, Any]]:
    """What Helm installs (templates, hooks aside), read by sigs.k8s.io/yaml."""
    return oracle_objects(re.split(r"^---$", helm_install_manifest(case), flags=re.MULTILINE))


def chart_crd_names(case: ChartCase) -> set[str]:
    chart = helm_python.Chart.load(case.directory)
    with chart:
        crds = oracle_objects(crd["data"] for crd in chart.crds)
    return {str(crd["metadata"]["name"]) for crd in crds}


def describe_differences(
    ours: Mapping[Key, dict[str, Any]],
    theirs: Mapping[Key, dict[str, Any]],
    unstable: Mapping[Key, set[tuple[str | int, ...]]],
    reference: str,
) -> list[str]:
    found: list[str] = []
    for key in sorted(theirs.keys() - ours.keys()):
        found.append(f"{'/'.join(key)}: {reference} has it, fleetbus does not")
    for key in sorted(ours.keys() - theirs.keys()):
        found.append(f"{'/'.join(key)}: fleetbus has it, {reference} does not")
    for key in sorted(ours.keys() & theirs.keys()):
        for path in differing_paths(comparable(ours[key]), comparable(theirs[key])):
            if path in unstable.get(key, set()):
                continue
            found.append(f"{'/'.join(key)}: {path_text(path)} differs from {reference}")
    return found


@pytest.mark.parametrize("case", CHARTS, ids=[case.name for case in CHARTS])
def test_a_corpus_chart_normalizes_to_the_objects_helm_installs(case: ChartCase) -> None:
    normalized = normalize(
        case.directory, NormalizeOptions(name=case.release, namespace=case.namespace)
    )
    crds_folder = chart_crd_names(case)
    ours = {
        key_of(step.object, case.namespace): without_namespace(step.object, case.namespace)
        for _, step in normalized.taskset.steps()
        if step.hook is None
        and not (step.ref.kind == "CustomResourceDefinition" and step.ref.name in crds_folder)
    }
    first, second = helm_installed_objects(case), helm_installed_objects(case)
    theirs = {key_of(m, case.namespace): without_namespace(m, case.namespace) for m in first}
    again = {key_of(m, case.namespace): without_namespace(m, case.namespace) for m in second}
    unstable = {key: set(differing_paths(theirs[key], again[key])) for key in theirs}
    assert len(theirs) > 0
    assert describe_differences(ours, theirs, unstable, "helm install") == []


def test_the_helm2_chart_skips_its_crd_install_hooks_with_a_note() -> None:
    [case] = [case for case in CHARTS if case.name == "jaeger-operator"]
    normalized = normalize(
        case.directory, NormalizeOptions(name=case.release, namespace=case.namespace)
    )
    assert any(
        "jaeger-operator/templates/crds.yaml (rendered)" in line
        and "CustomResourceDefinition/jaegers.jaegertracing.io" in line
        and "unknown Helm hook 'crd-install'" in line
        for line in normalized.left_out
    ), normalized.left_out
    crds = [step for _, step in normalized.taskset.steps() if step.ref.kind.endswith("Definition")]
    assert [str(step.ref) for step in crds] == ["CustomResourceDefinition/jaegers.jaegertracing.io"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d).split("kustomize/")[1])
def test_a_corpus_kustomization_normalizes_to_what_kubectl_kustomize_builds(
    directory: Path,
) -> None:
    normalized = normalize(directory, NormalizeOptions(name="example", namespace="apps"))
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, check=True, text=True
    ).stdout
    theirs = {
        key_of(m, "apps"): without_namespace(m, "apps")
        for m in oracle_objects(re.split(r"^---$", built, flags=re.MULTILINE))
    }
    ours = {
        key_of(step.object, "apps"): without_namespace(step.object, "apps")
        for _, step in normalized.taskset.steps()
    }
    assert len(theirs) > 0
    assert describe_differences(ours, theirs, {}, "kubectl kustomize") == []


def copy_chart(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(CHARTS[0].directory.parent / name, target)
    return target


def render_cli(*args: str) -> subprocess.CompletedProcess[str]:
    fleetbus = Path(sys.executable).parent / "fleetbus"
    return subprocess.run(
        [str(fleetbus), "render", *args], capture_output=True, text=True, timeout=120, check=False
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fleetbus: error: ")
    assert "Traceback" not in result.stderr
    for part in expected:
        assert part in lines[0], lines[0]


def test_a_missing_dependency_is_one_line_naming_chart_yaml(tmp_path: Path) -> None:
    chart = copy_chart("nginx", tmp_path)
    shutil.rmtree(chart / "charts" / "common")
    assert_one_clear_line(render_cli(str(chart)), "Chart.yaml", "common")


def test_a_required_value_is_one_line_naming_the_template_and_line(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("configs:\n  clusterCredentials:\n    prod:\n      config: {}\n")
    result = render_cli(str(CHARTS[3].directory), "-f", str(values))
    assert_one_clear_line(
        result, "argo-cd/templates/argocd-configs/cluster-secrets.yaml:26:", "is required"
    )


def test_a_fail_in_a_template_is_one_line_naming_the_template_and_line(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "prometheus:\n  podmonitor: {enabled: true}\n  servicemonitor: {enabled: true}\n"
    )
    result = render_cli(str(CHARTS[1].directory), "-f", str(values))
    assert_one_clear_line(result, "cert-manager/templates/", ".yaml:2:", "can be enabled at a time")


def test_a_template_rendering_broken_yaml_is_one_line_naming_the_template_and_line(
    tmp_path: Path,
) -> None:
    chart = copy_chart("ingress-nginx", tmp_path)
    service = chart / "templates" / "controller-serviceaccount.yaml"
    service.write_text(service.read_text() + "\n  broken: [unclosed\n")
    result = render_cli(str(chart))
    assert_one_clear_line(
        result, "ingress-nginx/templates/controller-serviceaccount.yaml (rendered):", "invalid YAML"
    )


def test_a_duplicate_key_rendered_by_a_template_is_one_line_naming_both_lines(
    tmp_path: Path,
) -> None:
    chart = copy_chart("ingress-nginx", tmp_path)
    account = chart / "templates" / "controller-serviceaccount.yaml"
    text = account.read_text().replace("metadata:\n", "metadata:\n  name: extra\n", 1)
    account.write_text(text)
    result = render_cli(str(chart))
    assert_one_clear_line(
        result,
        "controller-serviceaccount.yaml (rendered):",
        "duplicate key 'name'",
        "first on line",
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ("- a\n- b\n", ("values.yaml:1:", "expected a mapping, not a list")),
        ("controller: 5\n", ("ingress-nginx/templates/", "can't evaluate field")),
    ],
    ids=["a-list", "a-number-for-a-mapping"],
)
def test_values_that_are_not_a_mapping_are_one_line_naming_the_file(
    tmp_path: Path, values: str, expected: tuple[str, ...]
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    assert_one_clear_line(render_cli(str(CHARTS[2].directory), "-f", str(path)), *expected)


def test_the_fast_yaml_reader_reads_the_corpus_as_libyaml_does_and_reads_most_of_it() -> None:
    """Every CRD file and every rendered document of the corpus, read by `fastyaml` (where it
    can prove it reads right) and by libyaml's nodes: the same documents, on the same lines.
    Every CRD file, and nearly every rendered document, takes the fast path."""
    fast = slow = 0
    for case in CHARTS:
        with helm_python.Chart.load(case.directory) as chart:
            rendered = chart.render({}, name=case.release, namespace=case.namespace)
            crds = chart.crds
        for crd in crds:
            read = fast_documents(crd["data"])
            assert read is not None, crd["filename"]
            by_libyaml = parse_documents_by_libyaml(crd["data"], crd["filename"])
            assert read == [(d.line, d.manifest) for d in by_libyaml], crd["filename"]
        for template, text in rendered.items():
            for _, piece in split_helm_manifest(text):
                read = fast_documents(piece + "\n")
                if read is None:
                    slow += 1
                    continue
                fast += 1
                by_libyaml = parse_documents_by_libyaml(piece + "\n", template)
                assert read == [(d.line, d.manifest) for d in by_libyaml], template
    assert fast >= 9 * (fast + slow) // 10, f"{slow} of {fast + slow} rendered documents"


@pytest.mark.parametrize(
    ("case", "values"),
    [(case, {}) for case in CHARTS]
    + [
        (LARGEST_CHART, {"crds": {"enabled": False}}),
        (LARGEST_CHART, {"grafana": {"enabled": False}, "kubeStateMetrics": {"enabled": False}}),
    ],
    ids=lambda value: getattr(value, "name", None) or str(value),
)
def test_the_crds_read_from_the_archive_are_the_ones_helm_installs(
    case: ChartCase, values: dict[str, Any]
) -> None:
    archive = chart_archive_of(case.directory)
    files = dict(archive_files(archive))
    index = index_archive(list(files.items()))
    with helm_python.Chart.load_archive(archive) as chart:
        chart.render(values, name=case.release, namespace=case.namespace, is_install=True)
        enabled = [str(dependency["name"]) for dependency in chart.dependencies]
        helm_installs = sorted((crd["filename"], crd["data"].encode()) for crd in chart.crds)
        installed = index.installed_crds(chart.name, enabled)
    if installed is None:
        assert case is not LARGEST_CHART  # the benchmark's chart takes the archive's word
        return
    assert sorted((crd.filename, files[crd.filename]) for crd in installed) == helm_installs


def test_a_disabled_subchart_brings_none_of_its_crds() -> None:
    archive = chart_archive_of(LARGEST_CHART.directory)

    def crds_with(values: dict[str, Any]) -> int:
        taskset = render_archive(
            archive, values, name=LARGEST_CHART.release, namespace=LARGEST_CHART.namespace
        ).taskset
        return sum(
            step.object["kind"] == "CustomResourceDefinition"
            for phase in (taskset.init, taskset.install)
            for step in phase
        )

    assert crds_with({}) == 10
    assert crds_with({"crds": {"enabled": False}}) == 0
