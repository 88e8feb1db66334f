"""Kustomize overlays through the real `kubectl kustomize`: patches, generators, phases, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from normalizer import NormalizeOptions, detect_format, normalize
from normalizer.errors import KustomizeFailed, UnsupportedSource
from normalizer.kustomize import kubectl_path
from taskset.model import Step, Taskset

DATA = Path(__file__).parent.parent / "data"
BASE = DATA / "kustomize" / "base"
OVERLAY = DATA / "kustomize" / "overlay"
OPTIONS = NormalizeOptions(namespace="shop")


def by_kind(taskset: Taskset, kind: str) -> Step:
    [step] = [s for _, s in taskset.steps() if s.ref.kind == kind]
    return step


def test_kubectl_is_the_one_installed_beside_this_python() -> None:
    assert Path(kubectl_path()).parent == Path(sys.executable).parent


def test_the_overlay_lands_in_phases_in_install_order() -> None:
    taskset = normalize(OVERLAY, OPTIONS).taskset
    assert [str(s.ref) for s in taskset.init] == ["Job/shop/prod-migrate"]
    assert [s.ref.kind for s in taskset.install] == ["Secret", "ConfigMap", "Service", "Deployment"]
    assert taskset.post_install == []
    assert taskset.pre_delete == []
    assert taskset.init[0].wait == "complete"
    assert taskset.name == "overlay"
    assert taskset.source is not None
    assert taskset.source.format == "kustomize"


def test_the_overlays_patches_and_generators_are_applied() -> None:
    taskset = normalize(OVERLAY, OPTIONS).taskset
    deployment = by_kind(taskset, "Deployment").object
    service = by_kind(taskset, "Service").object
    config = by_kind(taskset, "ConfigMap").object
    secret = by_kind(taskset, "Secret").object
    assert deployment["metadata"]["name"] == "prod-app"
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert config["data"]["MODE"] == "production"
    assert "color=blue" in config["data"]["settings.properties"]
    assert config["metadata"]["name"].startswith("prod-app-settings-")
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert secret["metadata"]["name"].startswith("prod-app-secret-")
    assert all(s.object["metadata"]["annotations"]["team"] == "platform" for s in taskset.install)
    assert all(s.ref.namespace == "shop" for _, s in taskset.steps())


def test_the_base_alone_differs_from_the_overlay() -> None:
    base = normalize(BASE, OPTIONS).taskset
    assert [s.ref.name for s in base.install][1:] == ["app", "app"]
    assert by_kind(base, "Deployment").object["spec"]["replicas"] == 1
    assert base.init == []


def test_a_kustomization_file_stands_for_its_directory() -> None:
    assert detect_format(OVERLAY / "kustomization.yaml") == "kustomize"
    via_file = normalize(OVERLAY / "kustomization.yaml", OPTIONS).taskset
    assert via_file == normalize(OVERLAY, OPTIONS).taskset


def test_a_kustomize_error_carries_kubectls_message() -> None:
    with pytest.raises(KustomizeFailed) as caught:
        normalize(DATA / "kustomize" / "broken", OPTIONS)
    message = str(caught.value)
    assert message.startswith(f"kustomize build of {DATA / 'kustomize' / 'broken'} failed: ")
    assert "does-not-exist.yaml" in message
    assert "\n" not in message


def test_values_are_refused_for_an_overlay() -> None:
    with pytest.raises(UnsupportedSource, match="Helm charts only"):
        normalize(OVERLAY, NormalizeOptions(values=[{"a": 1}]))


@pytest.mark.parametrize(
    ("files", "target", "expected"),
    [
        ({"Chart.yaml": "name: x\n"}, ".", "helm"),
        ({"Chart.yaml": "name: x\n", "kustomization.yaml": ""}, ".", "helm"),
        ({"kustomization.yaml": ""}, ".", "kustomize"),
        ({"kustomization.yml": ""}, ".", "kustomize"),
        ({"Kustomization": ""}, ".", "kustomize"),
        ({"a.yaml": ""}, ".", "yaml"),
        ({"a.yaml": ""}, "a.yaml", "yaml"),
        ({"chart-1.0.0.tgz": ""}, "chart-1.0.0.tgz", "helm"),
        ({"chart.tar.gz": ""}, "chart.tar.gz", "helm"),
        ({"Chart.yaml": ""}, "Chart.yaml", "helm"),
    ],
)
def test_the_format_is_detected_from_the_path(
    tmp_path: Path, files: dict[str, str], target: str, expected: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert detect_format(tmp_path / target) == expected
