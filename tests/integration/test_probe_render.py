"""A chart that generates values is rendered a second time as a probe: only the templates
whose output can differ. The probe must find exactly the templates a second render of the
whole chart finds differing, render the others it holds exactly as the whole chart does, and
still catch a generator hidden behind include chains, `tpl`, blocks, checksums and
subcharts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest

from normalizer import NormalizeOptions, normalize
from normalizer.helm import chart_archive_of, probe_chart_archive
from tests.corpus_cases import CHARTS

HIDDEN = Path(__file__).parent.parent / "data" / "charts" / "hidden-generators"


@dataclass(frozen=True)
class Case:
    name: str
    directory: Path
    release: str
    namespace: str
    values: Mapping[str, Any]


CASES = [Case(c.name, c.directory, c.release, c.namespace, {}) for c in CHARTS] + [
    Case("hidden-generators", HIDDEN, "app", "apps", {}),
    Case(
        "hidden-generators-tpl",
        HIDDEN,
        "app",
        "apps",
        {"greeting": "hello {{ randAlphaNum 4 }}"},
    ),
]


def render(archive: bytes, case: Case) -> dict[str, str]:
    with helm_python.Chart.load_archive(archive) as chart:
        return chart.render(
            dict(case.values), name=case.release, namespace=case.namespace, is_install=True
        )


def differing(first: Mapping[str, str], second: Mapping[str, str]) -> set[str]:
    return {template for template in second if first.get(template) != second[template]}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_probe_finds_what_a_second_render_of_the_whole_chart_finds(case: Case) -> None:
    archive = chart_archive_of(case.directory)
    first, second = render(archive, case), render(archive, case)
    probe = probe_chart_archive(archive, case.values)
    if probe is None:
        # no probe: the whole chart is rendered again, which is what is compared with
        assert case.name not in ("kube-prometheus-stack", "hidden-generators")
        return
    probed = render(probe, case)
    assert set(probed) <= set(first)
    assert differing(first, probed) == differing(first, second)
    for template in set(probed) - differing(first, second):
        assert probed[template] == first[template], template


def test_the_largest_chart_is_probed_with_a_fraction_of_its_templates() -> None:
    [case] = [case for case in CASES if case.name == "kube-prometheus-stack"]
    archive = chart_archive_of(case.directory)
    probe = probe_chart_archive(archive, {})
    assert probe is not None
    probed, whole = render(probe, case), render(archive, case)
    assert len(probed) * 5 < len(whole)
    assert len(probe) * 5 < len(archive)


def test_hidden_generators_are_in_the_probe_and_plain_templates_are_not() -> None:
    archive = chart_archive_of(HIDDEN)
    plain_values, tpl_values = CASES[-2], CASES[-1]
    plain_probe = probe_chart_archive(archive, {})
    tpl_probe = probe_chart_archive(archive, tpl_values.values)
    assert plain_probe is not None
    assert tpl_probe is not None
    generating = {
        "hidden-generators/templates/token.yaml",  # include → include → subchart → rand
        "hidden-generators/templates/deployment.yaml",  # checksum of token.yaml by path
        "hidden-generators/templates/banner.yaml",  # a block's default
        "hidden-generators/charts/vault/templates/instance.yaml",  # a subchart's uuidv4
    }
    assert set(render(plain_probe, plain_values)) == generating
    assert set(render(tpl_probe, tpl_values)) == {
        *generating,
        "hidden-generators/templates/greeting.yaml",  # tpl of a generating value
    }
    first, second = render(archive, tpl_values), render(archive, tpl_values)
    assert differing(first, second) == set(render(tpl_probe, tpl_values))


def test_every_generated_field_is_named_in_a_note_through_the_probe() -> None:
    normalized = normalize(
        HIDDEN,
        NormalizeOptions(
            name="app", namespace="apps", values=[{"greeting": "hi {{ randAlphaNum 4 }}"}]
        ),
    )
    notes = "\n".join(normalized.notes)
    for expected in (
        "Secret/app-token: stringData.token differs",
        "Deployment/app: spec.template.metadata.annotations.checksum/token differs",
        "ConfigMap/app-banner: data.banner differs",
        "ConfigMap/app-vault-instance: data.id differs",
        "ConfigMap/app-greeting: data.message differs",
    ):
        assert expected in notes
    assert "app-static" not in notes
    assert "app-vault-plain" not in notes


def test_a_generated_value_stored_for_other_templates_is_found_by_a_whole_render(
    tmp_path: Path,
) -> None:
    chart = tmp_path / "stored"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: stored\nversion: 0.1.0\n")
    # Helm renders z-token.yaml first (reverse order of names), so a-reader.yaml sees the token
    (chart / "templates" / "z-token.yaml").write_text(
        '{{- $_ := set .Values "token" (randAlphaNum 8) }}\n'
    )
    (chart / "templates" / "a-reader.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: reader\n"
        "data:\n  token: {{ .Values.token | quote }}\n"
    )
    assert probe_chart_archive(chart_archive_of(chart), {}) is None
    normalized = normalize(chart, NormalizeOptions(name="stored", namespace="apps"))
    assert any("ConfigMap/reader: data.token differs" in note for note in normalized.notes)
