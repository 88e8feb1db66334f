"""Helm charts render as Helm renders them for a given cluster, reproducibly, or say why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from normalizer import NormalizeOptions, normalize
from normalizer.capabilities import Capabilities
from normalizer.errors import RegenerationRefused, UnsupportedSource
from normalizer.helm import chart_archive_of, render_chart_archive
from taskset.model import Taskset

DATA = Path(__file__).parent.parent / "data" / "charts"
CAPABILITIES_CHART = DATA / "capabilities"
GENERATED_CHART = DATA / "generated"


def objects(taskset: Taskset) -> dict[str, dict[str, object]]:
    return {str(step.ref): step.object for _, step in taskset.steps()}


def secret_data(taskset: Taskset) -> dict[str, str]:
    [secret] = [step.object for _, step in taskset.steps() if step.ref.kind == "Secret"]
    data: dict[str, str] = secret["stringData"]
    return data


def test_without_capabilities_a_gated_object_is_absent_and_a_note_names_the_defaults() -> None:
    normalized = normalize(CAPABILITIES_CHART, NormalizeOptions(name="web", namespace="apps"))
    assert "ServiceMonitor/apps/web" not in objects(normalized.taskset)
    config = objects(normalized.taskset)["ConfigMap/apps/web-cluster"]
    assert config["data"] == {"kube": "v1.36.0"}
    [note] = normalized.notes
    assert "templates consult .Capabilities (capabilities/templates/monitor.yaml)" in note
    assert "Kubernetes v1.36.0" in note


def test_kube_version_and_api_versions_reach_the_templates_like_helm_template() -> None:
    capabilities = Capabilities("v1.31.4", ("monitoring.coreos.com/v1/ServiceMonitor",))
    normalized = normalize(
        CAPABILITIES_CHART,
        NormalizeOptions(name="web", namespace="apps", capabilities=capabilities),
    )
    rendered = objects(normalized.taskset)
    assert rendered["ServiceMonitor/apps/web"]["kind"] == "ServiceMonitor"
    assert rendered["ConfigMap/apps/web-cluster"]["data"] == {"kube": "v1.31.4"}
    assert [note for note in normalized.notes if ".Capabilities" in note] == []


@pytest.mark.parametrize(
    ("capabilities", "message"),
    [
        (("1.x", ()), "--kube-version '1.x' is not a Kubernetes version"),
        ((None, ("monitoring/v1/servicemonitor",)), "is not GROUP/VERSION"),
    ],
)
def test_malformed_capabilities_are_refused_naming_the_flag(
    capabilities: tuple[str | None, tuple[str, ...]], message: str
) -> None:
    with pytest.raises(UnsupportedSource, match=message):
        Capabilities(*capabilities)


def test_a_generated_value_is_named_in_a_note_with_its_object_and_field() -> None:
    normalized = normalize(GENERATED_CHART, NormalizeOptions(name="app", namespace="apps"))
    [note] = normalized.notes
    assert "generated/templates/secret.yaml (rendered):1: Secret/app-auth:" in note
    assert "stringData.motd, stringData.password differ between two renders" in note


def test_a_pinned_value_makes_the_render_reproducible_and_the_note_goes() -> None:
    chart = chart_archive_of(GENERATED_CHART)
    values = {"password": "pinned"}
    first = render_chart_archive(chart, values, "app", "apps")
    assert secret_data(first)["password"] == "pinned"
    normalized = normalize(
        GENERATED_CHART,
        NormalizeOptions(name="app", namespace="apps", values=[values]),
    )
    assert [note for note in normalized.notes if "password" in note] == []


def test_a_re_render_with_other_values_keeps_the_generated_values_it_had() -> None:
    chart = chart_archive_of(GENERATED_CHART)
    published = render_chart_archive(chart, {}, "app", "apps")
    fresh = render_chart_archive(chart, {}, "app", "apps")
    assert secret_data(fresh)["password"] != secret_data(published)["password"]
    again = render_chart_archive(chart, {"extra": 1}, "app", "apps", previous=published)
    assert secret_data(again) == secret_data(published)


def test_a_re_render_that_changes_the_text_around_a_generated_value_is_refused() -> None:
    chart = chart_archive_of(GENERATED_CHART)
    published = render_chart_archive(chart, {}, "app", "apps")
    with pytest.raises(
        RegenerationRefused, match=r"Secret/app-auth: stringData\.motd holds a generated value"
    ):
        render_chart_archive(chart, {"banner": "welcome"}, "app", "apps", previous=published)
