"""A Helm render's stages run side by side (the engine's load and render, the archive's
reading, the probe render): an error in any of them surfaces as it would alone, and nothing
is left running or open after it, whichever stage failed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import helm_python
import pytest
from helm_python import _native as helm_native

from normalizer import helm as helm_adapter
from normalizer.errors import ChartNotLoadable, ChartRenderFailed, InvalidYaml
from normalizer.probe import ChartTemplates

GENERATING_TEMPLATE = (
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-password\n"
    "stringData:\n  password: {{ randAlphaNum 12 | quote }}\n"
)
PLAIN_TEMPLATE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"


def chart_archive(
    tmp_path: Path, templates: dict[str, str], crds: dict[str, str] | None = None
) -> bytes:
    chart = tmp_path / "app"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("")
    for name, text in templates.items():
        (chart / "templates" / name).write_text(text)
    if crds:
        (chart / "crds").mkdir()
        for name, text in crds.items():
            (chart / "crds" / name).write_text(text)
    return helm_adapter.package_chart_directory(chart)


def render_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("helm")]


@pytest.fixture
def nothing_left_behind() -> Iterator[None]:
    """Fails the test if a render left a thread running or a chart handle of the engine
    open."""
    helm_adapter.forget_chart_caches()
    handles = helm_native.open_handles_count()
    yield
    assert render_threads() == []
    assert helm_native.open_handles_count() == handles


@pytest.mark.usefixtures("nothing_left_behind")
def test_a_render_leaves_no_thread_and_no_chart_open(tmp_path: Path) -> None:
    archive = chart_archive(tmp_path, {"secret.yaml": GENERATING_TEMPLATE})
    built = helm_adapter.render_archive(archive, {}, name="rel", namespace="team")
    assert [step.ref.kind for step in built.taskset.install] == ["Secret"]
    assert any("password" in note for note in built.notes)  # the probe render ran


@pytest.mark.usefixtures("nothing_left_behind")
def test_an_engine_error_beside_the_archive_reading_is_the_engines_message(
    tmp_path: Path,
) -> None:
    archive = chart_archive(
        tmp_path,
        {"secret.yaml": GENERATING_TEMPLATE, "broken.yaml": '{{ fail "no database given" }}'},
    )
    with pytest.raises(ChartRenderFailed) as caught:
        helm_adapter.render_archive(archive, {}, name="rel", namespace="team")
    assert str(caught.value).startswith("Helm chart app failed to render: ")
    assert "app/templates/broken.yaml:1" in str(caught.value)
    assert "no database given" in str(caught.value)


@pytest.mark.usefixtures("nothing_left_behind")
def test_a_crd_that_does_not_parse_is_named_with_its_line_after_a_render(
    tmp_path: Path,
) -> None:
    archive = chart_archive(
        tmp_path,
        {"configmap.yaml": PLAIN_TEMPLATE},
        crds={"widgets.yaml": "apiVersion: apiextensions.k8s.io/v1\nkind: [oops\n"},
    )
    with pytest.raises(InvalidYaml, match=r"app/crds/widgets\.yaml:3"):
        helm_adapter.render_archive(archive, {}, name="rel", namespace="team")


@pytest.mark.usefixtures("nothing_left_behind")
def test_an_archive_refused_while_the_engine_loads_it_closes_what_the_engine_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = chart_archive(tmp_path, {"configmap.yaml": PLAIN_TEMPLATE})
    monkeypatch.setattr(helm_adapter, "MAX_UNPACKED_ARCHIVE", 512)
    handles = helm_native.open_handles_count()
    with pytest.raises(ChartNotLoadable, match=r"the chart is not a readable chart archive: "):
        helm_adapter.render_archive(archive, {}, name="rel", namespace="team")
    assert helm_native.open_handles_count() == handles


@pytest.mark.usefixtures("nothing_left_behind")
def test_a_render_interrupted_while_the_engine_renders_closes_its_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = chart_archive(tmp_path, {"secret.yaml": GENERATING_TEMPLATE})

    def interrupted(*read: object) -> object:
        raise KeyboardInterrupt

    # the crds/ are read while the engine renders
    monkeypatch.setattr(helm_adapter, "_read_crds_ahead", interrupted)
    handles = helm_native.open_handles_count()
    with pytest.raises(KeyboardInterrupt) as caught:
        helm_adapter.render_archive(archive, {}, name="rel", namespace="team")
    # closed at once, not when the collector finds the chart the traceback still reaches
    assert caught.traceback is not None
    assert helm_native.open_handles_count() == handles


@pytest.mark.usefixtures("nothing_left_behind")
def test_a_failing_second_render_surfaces_with_the_engines_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second render, when the chart cannot be rendered with copies of its generating
    templates, runs on its own thread; what stops it is reported as a render error of the
    chart, as the first render's would be."""
    archive = chart_archive(tmp_path, {"secret.yaml": GENERATING_TEMPLATE})
    monkeypatch.setattr(ChartTemplates, "copies", lambda self, tpl: None)
    calls = 0

    def render_again(*args: object, **kwargs: object) -> dict[str, str]:
        nonlocal calls
        calls += 1
        raise helm_python.HelmError("template: app/templates/secret.yaml:6: entropy ran out")

    monkeypatch.setattr(helm_adapter, "_render_archive_again", render_again)
    with pytest.raises(ChartRenderFailed) as caught:
        helm_adapter.render_archive(archive, {}, name="rel", namespace="team")
    assert calls == 2  # the probe, then the whole chart
    assert str(caught.value) == (
        "Helm chart app failed to render: template: app/templates/secret.yaml:6: entropy ran out"
    )
