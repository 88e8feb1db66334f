"""A chart that generates values is rendered twice in one engine call where it can be: with
a copy of each template whose output can differ beside it, so the chart is loaded once. This
must name the same fields as rendering the probe on its own, render what Helm installs, and
fall back to the probe on its own wherever a copy could render otherwise than its original."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from normalizer import helm as helm_adapter
from normalizer.builder import BuiltTaskset
from normalizer.errors import ChartRenderFailed
from normalizer.probe import ChartTemplates
from tests.corpus_cases import CHARTS

GENERATING_CHARTS = [case for case in CHARTS if case.name in ("kube-prometheus-stack", "nginx")]


class SecondRenders:
    """Counts the engine calls made for a second render on their own."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        rendered_again = helm_adapter._render_archive_again

        def counted(*args: Any, **kwargs: Any) -> dict[str, str]:
            self.calls += 1
            return rendered_again(*args, **kwargs)

        monkeypatch.setattr(helm_adapter, "_render_archive_again", counted)


def chart(tmp_path: Path, templates: dict[str, str]) -> bytes:
    directory = tmp_path / "app"
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 0.1.0\n")
    (directory / "values.yaml").write_text("")
    for name, text in templates.items():
        (directory / "templates" / name).write_text(text)
    return helm_adapter.package_chart_directory(directory)


def render(archive: bytes, values: dict[str, Any] | None = None) -> BuiltTaskset:
    helm_adapter.forget_chart_caches()
    return helm_adapter.render_archive(archive, values or {}, name="rel", namespace="apps")


def secret_data(built: BuiltTaskset) -> dict[str, Any]:
    [secret] = [step.object for step in built.taskset.install if step.ref.kind == "Secret"]
    data: dict[str, Any] = secret["stringData"]
    return data


def differing(built: BuiltTaskset) -> list[str]:
    return [note for note in built.notes if "between two renders" in note]


@pytest.mark.parametrize("case", GENERATING_CHARTS, ids=[case.name for case in GENERATING_CHARTS])
def test_one_render_with_copies_names_what_the_probe_on_its_own_names(
    case: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = helm_adapter.chart_archive_of(case.directory)
    second = SecondRenders(monkeypatch)
    helm_adapter.forget_chart_caches()
    with_copies = helm_adapter.render_archive(
        archive, {}, name=case.release, namespace=case.namespace
    )
    calls_with_copies = second.calls
    monkeypatch.setattr(ChartTemplates, "copies", lambda self, tpl: None)
    helm_adapter.forget_chart_caches()
    alone = helm_adapter.render_archive(archive, {}, name=case.release, namespace=case.namespace)
    assert differing(with_copies) == differing(alone)
    assert with_copies.notes == alone.notes
    assert [s.ref for s in with_copies.taskset.install] == [s.ref for s in alone.taskset.install]
    if case.name == "kube-prometheus-stack":
        assert calls_with_copies == 0  # one engine call
        assert len(differing(with_copies)) == 2  # Grafana's admin password and its checksum
    else:
        assert calls_with_copies == second.calls - calls_with_copies == 1  # nginx: no probe


def test_a_template_reading_its_name_is_probed_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = chart(
        tmp_path,
        {
            "secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n"
            "stringData:\n  password: {{ randAlphaNum 12 | quote }}\n"
            "  source: {{ .Template.Name | quote }}\n",
        },
    )
    second = SecondRenders(monkeypatch)
    built = render(archive)
    assert second.calls == 1
    assert secret_data(built)["source"] == "app/templates/secret.yaml"
    [note] = differing(built)
    assert "stringData.password differs" in note


def test_a_template_changing_values_between_a_copy_and_its_original_stops_the_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Helm renders names in reverse order: the copy (secret.yaml.<suffix>), then
    # secret.yaml-defaults.yaml, then secret.yaml
    archive = chart(
        tmp_path,
        {
            "secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n"
            "stringData:\n  password: {{ randAlphaNum 12 | quote }}\n"
            '  tier: {{ .Values.tier | default "none" | quote }}\n',
            "secret.yaml-defaults.yaml": '{{- $_ := set .Values "tier" "web" }}',
        },
    )
    second = SecondRenders(monkeypatch)
    built = render(archive)
    assert second.calls == 1
    assert secret_data(built)["tier"] == "web"
    [note] = differing(built)
    assert "stringData.password differs" in note


def test_a_chart_rendered_with_copies_installs_what_helm_installs(tmp_path: Path) -> None:
    archive = chart(
        tmp_path,
        {
            "secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n"
            "stringData:\n  password: {{ randAlphaNum 12 | quote }}\n"
            '  tier: {{ .Values.tier | default "none" | quote }}\n',
            "a-defaults.yaml": '{{- $_ := set .Values "tier" "web" }}',
            "config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config\n"
            "data:\n  checksum: "
            '{{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}\n',
        },
    )
    built = render(archive)
    copied = {
        original
        for with_copies in helm_adapter._WITH_COPIES.values()
        if with_copies is not None
        for original in with_copies.copies.values()
    }
    assert copied == {"app/templates/secret.yaml", "app/templates/config.yaml"}
    assert [s.ref.name for s in built.taskset.install] == ["token", "config"]
    assert secret_data(built)["tier"] == "none"  # a-defaults.yaml renders after secret.yaml
    assert len(differing(built)) == 2


def test_a_copy_that_fails_leaves_the_error_to_the_chart_itself(tmp_path: Path) -> None:
    archive = chart(
        tmp_path,
        {
            "secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n"
            "stringData:\n  password: {{ randAlphaNum 12 | quote }}\n"
            '  token: {{ required "set token" .Values.token | quote }}\n',
        },
    )
    with pytest.raises(ChartRenderFailed) as caught:
        render(archive)
    assert "app/templates/secret.yaml:" in str(caught.value)
    assert "probe" not in str(caught.value)
    assert secret_data(render(archive, {"token": "t"}))["token"] == "t"
