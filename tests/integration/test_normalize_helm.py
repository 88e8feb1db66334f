"""Helm charts through the real Helm engine: phases, hook order, fidelity to Helm, errors."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from normalizer import NormalizeOptions, normalize
from normalizer.errors import (
    ChartNotLoadable,
    ChartRenderFailed,
    InvalidYaml,
    SourceNotFound,
    ValuesRejected,
)
from normalizer.helm import package_chart_directory, render_chart_archive
from taskset.digest import canonical_json, digest_bytes, digest_of
from taskset.errors import InvalidName
from taskset.model import Taskset

DATA = Path(__file__).parent.parent / "data"
HOOKS_CHART = DATA / "charts" / "hooks"
EXAMPLE_CHART = Path(__file__).parent.parent.parent / "examples" / "helm" / "web"
OPTIONS = NormalizeOptions(name="rel", namespace="team")


def refs(taskset: Taskset, phase: str) -> list[str]:
    return [str(step.ref) for step in taskset.phase(phase)]  # type: ignore[arg-type]


def test_the_hooks_chart_puts_crds_and_hooks_in_phases_in_helms_order() -> None:
    taskset = normalize(HOOKS_CHART, OPTIONS).taskset
    assert refs(taskset, "init") == [
        "CustomResourceDefinition/gizmos.test.fleetbus.io",
        "ConfigMap/team/pre-install-config",
        "Job/team/pre-install-a",
        "ServiceAccount/team/hook-runner",
        "Job/team/pre-upgrade",
        "Job/team/both-ends",
        "Job/team/pre-install-b",
    ]
    assert refs(taskset, "install") == [
        "Secret/team/rel-credentials",
        "ConfigMap/team/rel-config",
        "ConfigMap/team/rel-metrics",
        "ClusterRole/rel-reader",
        "Service/team/rel",
        "Deployment/team/rel",
        "Gizmo/team/rel-gizmo",
    ]
    assert refs(taskset, "postInstall") == [
        "Job/team/post-install-first",
        "Job/team/post-upgrade",
        "Job/team/both-ends",
        "Job/team/post-install-late",
    ]
    assert refs(taskset, "preDelete") == [
        "Job/team/pre-delete-first",
        "Job/team/pre-delete-late",
        "Job/team/post-delete",
    ]


def test_hooks_keep_their_events_weight_and_delete_policy() -> None:
    taskset = normalize(HOOKS_CHART, OPTIONS).taskset
    hooks = {(str(s.ref), phase): s.hook for phase, s in taskset.steps() if s.hook is not None}
    first = hooks[("Job/team/pre-install-a", "init")]
    assert first is not None
    assert (first.events, first.weight, first.delete_policy) == (
        ["pre-install"],
        -5,
        ["before-hook-creation", "hook-succeeded"],
    )
    runner = hooks[("ServiceAccount/team/hook-runner", "init")]
    assert runner is not None
    assert runner.events == ["pre-install", "pre-upgrade"]
    assert runner.delete_policy == ["before-hook-creation"]
    late = hooks[("Job/team/pre-delete-late", "preDelete")]
    assert late is not None
    assert (late.weight, late.delete_policy) == (3, ["hook-succeeded"])
    assert [s.wait for s in taskset.init if s.ref.kind == "Job"] == ["complete"] * 4
    assert taskset.init[0].hook is None


def test_test_and_rollback_hooks_and_notes_are_left_out_and_listed() -> None:
    normalized = normalize(HOOKS_CHART, OPTIONS)
    names = {step.ref.name for _, step in normalized.taskset.steps()}
    assert not names & {"pre-rollback", "post-rollback", "rel-test", "rel-test-success"}
    assert len(normalized.left_out) == 4
    assert all("hooks/templates/hooks.yaml (rendered):" in line for line in normalized.left_out)


def _helm_objects(chart_dir: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """What Helm itself renders for the chart, parsed independently, crds/ included."""
    with helm_python.Chart.load(chart_dir) as chart:
        rendered = chart.render(values, name="rel", namespace="team", is_install=True)
        crds = [crd["data"] for crd in chart.crds]
    objects: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    for text in crds:
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def _without_namespace(manifest: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in manifest["metadata"].items() if k != "namespace"}
    return {**manifest, "metadata": metadata}


@pytest.mark.parametrize("chart", [HOOKS_CHART, EXAMPLE_CHART], ids=["hooks", "example-web"])
def test_the_normalized_objects_are_exactly_what_helm_renders(chart: Path) -> None:
    normalized = normalize(chart, OPTIONS)
    held = {canonical_json(step.object) for _, step in normalized.taskset.steps()}
    left_out_hooks = {"test", "test-success", "pre-rollback", "post-rollback"}
    helm = [
        m
        for m in _helm_objects(chart, {})
        if m["metadata"].get("annotations", {}).get("helm.sh/hook") not in left_out_hooks
    ]
    assert len(held) == len(helm)
    for manifest in helm:
        # Helm leaves the namespace to its client; fleetbus writes it into namespaced objects.
        placed = {**manifest, "metadata": {**manifest["metadata"], "namespace": "team"}}
        assert canonical_json(placed) in held or canonical_json(manifest) in held, manifest
    for _, step in normalized.taskset.steps():
        scoped = step.object["metadata"].get("namespace")
        if step.ref.kind in ("CustomResourceDefinition", "ClusterRole"):
            assert scoped is None
        else:
            assert scoped == "team"
        assert _without_namespace(step.object) in [_without_namespace(m) for m in helm]


def test_values_files_merge_in_order_and_are_kept(tmp_path: Path) -> None:
    first = {"replicas": 2, "database": {"host": "a.internal"}}
    second = {"replicas": 5}
    normalized = normalize(
        HOOKS_CHART, NormalizeOptions(name="rel", namespace="team", values=[first, second])
    )
    [deployment] = [s for s in normalized.taskset.install if s.ref.kind == "Deployment"]
    [config] = [s for s in normalized.taskset.install if s.ref.name == "rel-config"]
    assert deployment.object["spec"]["replicas"] == 5
    assert config.object["data"]["database"] == "a.internal"
    assert normalized.values == {"replicas": 5, "database": {"host": "a.internal"}}
    assert normalized.taskset.source is not None
    assert normalized.taskset.source.values_digest == digest_of(normalized.values)


def test_a_disabled_subchart_is_not_rendered() -> None:
    options = NormalizeOptions(
        name="rel", namespace="team", values=[{"metrics": {"enabled": False}}]
    )
    taskset = normalize(HOOKS_CHART, options).taskset
    assert "ConfigMap/team/rel-metrics" not in refs(taskset, "install")


def test_source_info_names_the_chart_and_its_archive() -> None:
    normalized = normalize(HOOKS_CHART, OPTIONS)
    source = normalized.taskset.source
    assert source is not None
    assert normalized.chart_archive is not None
    address = digest_bytes(normalized.chart_archive)
    assert (source.format, source.chart_name, source.chart_version) == ("helm", "hooks", "1.2.3")
    assert source.digest == source.chart_archive == address


def test_packaging_a_chart_directory_is_reproducible(tmp_path: Path) -> None:
    copy = tmp_path / "hooks"
    shutil.copytree(HOOKS_CHART, copy)
    first = package_chart_directory(copy)
    os.utime(copy / "values.yaml", (1_000_000, 1_000_000))
    (copy / "templates" / "app.yaml").touch()
    assert package_chart_directory(copy) == first
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {m.mtime for m in members} == {0}
    (copy / "values.yaml").write_text("replicas: 1\nimage: nginx:1.28\n")
    assert package_chart_directory(copy) != first


def test_a_packaged_chart_normalizes_like_its_directory(tmp_path: Path) -> None:
    archive = tmp_path / "hooks-1.2.3.tgz"
    archive.write_bytes(package_chart_directory(HOOKS_CHART))
    from_dir = normalize(HOOKS_CHART, OPTIONS)
    from_tgz = normalize(archive, OPTIONS)
    from_bytes = normalize(archive.read_bytes(), OPTIONS)
    assert from_tgz.chart_archive == archive.read_bytes()
    assert (
        digest_of(from_dir.taskset) == digest_of(from_tgz.taskset) == digest_of(from_bytes.taskset)
    )


def test_a_stored_archive_re_renders_with_other_values() -> None:
    normalized = normalize(HOOKS_CHART, OPTIONS)
    assert normalized.chart_archive is not None
    same = render_chart_archive(normalized.chart_archive, normalized.values, "rel", "team")
    assert same == normalized.taskset
    other = render_chart_archive(normalized.chart_archive, {"replicas": 7}, "rel", "edge")
    [deployment] = [s for s in other.install if s.ref.kind == "Deployment"]
    assert deployment.object["spec"]["replicas"] == 7
    assert deployment.ref.namespace == "edge"


def test_without_a_name_the_taskset_is_named_after_the_chart() -> None:
    taskset = normalize(HOOKS_CHART, NormalizeOptions(namespace="team")).taskset
    assert taskset.name == "hooks"


def _chart(tmp_path: Path, template: str, values: str = "", name: str = "broken") -> Path:
    chart = tmp_path / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(values)
    (chart / "templates" / "thing.yaml").write_text(template)
    return chart


def test_a_template_error_names_the_template_and_line(tmp_path: Path) -> None:
    chart = _chart(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ if }}\n")
    with pytest.raises(ChartRenderFailed, match=r"broken/templates/thing\.yaml:4"):
        normalize(chart, OPTIONS)


def test_a_missing_required_value_names_the_value() -> None:
    options = NormalizeOptions(name="rel", namespace="team", values=[{"database": {"host": None}}])
    with pytest.raises(ChartRenderFailed) as caught:
        normalize(HOOKS_CHART, options)
    message = str(caught.value)
    assert "database.host is required" in message
    assert "\n" not in message


def test_values_violating_the_schema_name_the_key() -> None:
    options = NormalizeOptions(name="rel", namespace="team", values=[{"replicas": 0}])
    with pytest.raises(ValuesRejected, match=r"/replicas.*minimum"):
        normalize(HOOKS_CHART, options)


def test_rendered_yaml_that_does_not_parse_names_the_template(tmp_path: Path) -> None:
    chart = _chart(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n")
    with pytest.raises(
        InvalidYaml, match=r"broken/templates/thing\.yaml \(rendered\):\d+: invalid YAML"
    ):
        normalize(chart, OPTIONS)


def test_a_chart_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="nope does not exist"):
        normalize(tmp_path / "nope", OPTIONS)


def test_a_directory_that_is_not_a_chart_is_refused_when_helm_is_forced(tmp_path: Path) -> None:
    with pytest.raises(ChartNotLoadable, match=r"Chart\.yaml"):
        normalize(tmp_path, NormalizeOptions(name="x", format="helm"))


def test_a_chart_missing_a_declared_dependency_says_what_to_run(tmp_path: Path) -> None:
    chart = _chart(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: broken\nversion: 0.1.0\n"
        "dependencies:\n  - {name: redis, version: 1.0.0, repository: https://example.com}\n"
    )
    with pytest.raises(ChartNotLoadable, match=r"redis.*helm dependency build"):
        normalize(chart, OPTIONS)


def test_a_release_name_helm_cannot_take_is_refused() -> None:
    with pytest.raises(InvalidName, match="at most 53"):
        normalize(HOOKS_CHART, NormalizeOptions(name="x" * 60, namespace="team"))


def test_an_archive_unpacking_beyond_the_limit_is_refused_naming_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from normalizer import helm as helm_adapter

    archive = package_chart_directory(HOOKS_CHART)
    monkeypatch.setattr(helm_adapter, "MAX_UNPACKED_ARCHIVE", 512)
    helm_adapter.forget_chart_caches()  # an archive unpacked before is not unpacked again
    with pytest.raises(ChartNotLoadable, match=r"unpacks to more than .* MiB"):
        helm_adapter.render_archive(archive, {}, name="rel", namespace="team")


def test_an_archive_helm_cannot_read_is_refused_with_helms_word() -> None:
    from normalizer import helm as helm_adapter

    with pytest.raises(ChartNotLoadable, match=r"not a Helm chart Helm can load"):
        helm_adapter.render_archive(b"not a gzip archive", {}, name="rel", namespace="team")
