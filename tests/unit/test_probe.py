"""The probe keeps every template whose output can differ between renders, and what those
need, and leaves out the rest; where it cannot tell, there is no probe."""

from __future__ import annotations

import pytest

from normalizer.probe import (
    ChartTemplates,
    ProbePlan,
    TplText,
    copy_name,
    render_order,
    tpl_text,
)

NOTHING = TplText()


def plan(templates: dict[str, str], tpl: TplText = NOTHING) -> ProbePlan | None:
    return ChartTemplates(templates.items()).probe(tpl)


def kept(templates: dict[str, str], tpl: TplText = NOTHING) -> set[str]:
    found = plan(templates, tpl)
    assert found is not None
    return set(found.templates)


STATIC = "kind: ConfigMap\ndata:\n  name: {{ .Release.Name | quote }}\n"


def test_a_generator_behind_an_include_chain_across_a_subchart_keeps_its_callers() -> None:
    templates = {
        "app/templates/_helpers.tpl": '{{- define "app.token" -}}{{ include "db.secret" . }}'
        "{{- end }}",
        "app/templates/secret.yaml": 'token: {{ include "app.token" . | quote }}',
        "app/templates/static.yaml": STATIC,
        "app/charts/db/templates/_helpers.tpl": '{{ define "db.secret" }}'
        '{{ template "db.random" . }}{{ end }}\n'
        '{{ define "db.random" }}{{ randAlphaNum 12 }}{{ end }}',
        "app/charts/db/templates/plain.yaml": STATIC,
    }
    assert kept(templates) == {
        "app/templates/_helpers.tpl",
        "app/templates/secret.yaml",
        "app/charts/db/templates/_helpers.tpl",
    }


def test_the_checksum_of_a_generating_template_included_by_its_path_is_kept_with_it() -> None:
    templates = {
        "app/templates/secret.yaml": "password: {{ randAlphaNum 8 }}",
        "app/templates/deployment.yaml": "checksum: "
        '{{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}',
        "app/templates/config.yaml": "checksum: "
        '{{ include (printf "%s/static.yaml" .Template.BasePath) . | sha256sum }}',
        "app/templates/static.yaml": STATIC,
    }
    assert kept(templates) == {"app/templates/secret.yaml", "app/templates/deployment.yaml"}


def test_a_template_included_by_its_path_is_in_the_probe_when_a_kept_one_includes_it() -> None:
    templates = {
        "app/templates/secret.yaml": "password: {{ randAlphaNum 8 }}\n"
        '{{ include (print $.Template.BasePath "/static.yaml") . | sha256sum }}',
        "app/templates/static.yaml": STATIC,
    }
    assert kept(templates) == {"app/templates/secret.yaml", "app/templates/static.yaml"}


def test_a_block_defines_and_renders_its_default() -> None:
    templates = {
        "app/templates/banner.yaml": '{{ block "app.banner" . }}{{ uuidv4 }}{{ end }}',
        "app/templates/static.yaml": STATIC,
    }
    assert kept(templates) == {"app/templates/banner.yaml"}


def test_tpl_counts_only_when_the_texts_it_renders_may_vary() -> None:
    templates = {
        "app/templates/greeting.yaml": "message: {{ tpl .Values.greeting . }}",
        "app/templates/static.yaml": STATIC,
    }
    assert kept(templates) == set()
    assert kept(templates, TplText(varies=True)) == {"app/templates/greeting.yaml"}


def test_texts_for_tpl_are_judged_by_what_their_actions_call() -> None:
    assert tpl_text("hello {{ randAlphaNum 4 }}") == TplText(varies=True)
    assert tpl_text("{{ .Release.Name }} now, with values and keys") == NOTHING
    assert tpl_text('{{ $_ := set .Values "a" 1 }}') == TplText(changes_state=True)
    assert tpl_text('{{ include "app.name" . }}') == TplText(varies=True, changes_state=True)


def test_a_template_string_holding_a_generating_action_counts_as_a_text_for_tpl() -> None:
    read = ChartTemplates(
        [("app/templates/a.yaml", 'x: {{ tpl "{{ randAlphaNum 3 }}" . }}')]
    ).template_text
    assert read.varies
    raw = ChartTemplates([("app/templates/a.yaml", "x: {{ tpl `{{ now }}` . }}")]).template_text
    assert raw.varies


def test_words_in_strings_comments_and_text_call_nothing() -> None:
    templates = {
        "app/templates/static.yaml": "# now and values\n"
        '{{/* randAlphaNum in a comment */}}when: {{ "now" | quote }}\n'
        'dashboard: {{`{"from": "now-1h", "values": [1], "keys": "}}"}`}}\n'
        'note: {{ "}}" }} randAlphaNum',
    }
    assert kept(templates) == set()


def test_a_template_changing_shared_state_is_kept_but_a_new_dict_is_not_shared() -> None:
    templates = {
        "app/templates/a-defaults.yaml": '{{- $_ := set .Values "tier" "web" }}',
        "app/templates/b-labels.yaml": "{{- $l := mergeOverwrite (dict) .Values.labels }}",
        "app/templates/secret.yaml": "password: {{ randAlphaNum 8 }} {{ .Values.tier }}",
    }
    assert kept(templates) == {"app/templates/a-defaults.yaml", "app/templates/secret.yaml"}


def test_a_generated_value_stored_in_shared_state_gives_no_probe() -> None:
    templates = {
        "app/templates/z-token.yaml": '{{- $_ := set .Values "token" (randAlphaNum 8) }}',
        "app/templates/a-reader.yaml": "token: {{ .Values.token }}",
    }
    assert plan(templates) is None


@pytest.mark.parametrize(
    "call",
    [
        "{{ include $name . }}",
        '{{ include (print .context.Template.BasePath "/x.yaml") .context }}',
        '{{ with .Values }}{{ include (print .Template.BasePath "/x.yaml") $ }}{{ end }}',
    ],
)
def test_a_rendered_template_calling_a_computed_name_gives_no_probe(call: str) -> None:
    templates = {
        "app/templates/secret.yaml": f"password: {{{{ randAlphaNum 8 }}}}\n{call}",
        "app/templates/static.yaml": STATIC,
    }
    assert plan(templates) is None


def test_a_computed_name_in_a_definition_nothing_renders_does_not_matter() -> None:
    templates = {
        "app/templates/_utils.tpl": '{{ define "app.checksum" }}'
        "{{ include (print $.Template.BasePath .path) . }}{{ end }}",
        "app/templates/secret.yaml": "password: {{ randAlphaNum 8 }}",
        "app/templates/static.yaml": STATIC,
    }
    assert kept(templates) == {"app/templates/_utils.tpl", "app/templates/secret.yaml"}


def test_files_read_by_a_kept_template_are_kept_for_its_own_chart_only() -> None:
    templates = {
        "app/charts/web/templates/_config.tpl": '{{ define "web.config" }}'
        '{{ .Files.Get "conf/app.ini" }}{{ end }}',
        "app/charts/web/templates/secret.yaml": 'x: {{ include "web.config" . }} '
        "{{ randAlphaNum 4 }}",
        "app/charts/crds/templates/job.yaml": '{{ .Files.Get "files/crds.bz2" | b64enc }}',
    }
    found = plan(templates)
    assert found is not None
    assert found.reads_files_of == {"app/charts/web"}
    assert found.keeps("app/charts/web/conf/app.ini")
    assert found.keeps("app/charts/web/crds/crd.yaml")
    assert not found.keeps("app/charts/crds/crds/crd.yaml")
    assert not found.keeps("app/charts/crds/files/crds.bz2")
    assert not found.keeps("app/charts/crds/templates/job.yaml")
    assert found.keeps("app/charts/crds/values.yaml")
    assert found.keeps("app/charts/crds/Chart.yaml")


def copies(templates: dict[str, str], tpl: TplText = NOTHING) -> set[str] | None:
    found = ChartTemplates(templates.items()).copies(tpl)
    return set(found) if found is not None else None


SECRET = "kind: Secret\nstringData:\n  password: {{ randAlphaNum 8 }}\n"


def test_the_templates_whose_output_can_differ_are_copied_and_no_others() -> None:
    templates = {
        "app/templates/_helpers.tpl": '{{ define "app.token" }}{{ uuidv4 }}{{ end }}',
        "app/templates/secret.yaml": SECRET,
        "app/templates/token.yaml": 'token: {{ include "app.token" . }}',
        "app/templates/deployment.yaml": "checksum: "
        '{{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}',
        "app/templates/static.yaml": STATIC,
        "app/templates/NOTES.txt": "Your password: {{ randAlphaNum 8 }}",
        "app/charts/db/templates/secret.yaml": SECRET,
    }
    assert copies(templates) == {
        "app/templates/secret.yaml",
        "app/templates/token.yaml",
        "app/templates/deployment.yaml",
        "app/charts/db/templates/secret.yaml",
    }


def test_a_copy_sorts_next_to_its_original_at_the_same_depth() -> None:
    original = "app/charts/db/templates/secret.yaml"
    between = sorted(
        [
            render_order("app/charts/db/templates/service.yaml"),
            render_order("app/charts/web/templates/a.yaml"),
            render_order("app/templates/secret.yaml"),
        ]
    )
    low, high = sorted([render_order(original), render_order(copy_name(original))])
    assert not [key for key in between if low < key < high]


@pytest.mark.parametrize(
    "reader",
    [
        "source: {{ .Template.Name }}",
        'source: {{ include "app.source" . }}',
        "source: {{ $.Template | toJson }}",
        'source: {{ tpl "{{ .Template.Name }}" . }}',
    ],
)
def test_a_template_reading_its_own_name_is_not_copied(reader: str) -> None:
    templates = {
        "app/templates/_helpers.tpl": '{{ define "app.source" }}{{ .Template.Name }}{{ end }}',
        "app/templates/secret.yaml": SECRET + reader,
    }
    assert copies(templates) is None


def test_a_template_reading_its_base_path_is_copied() -> None:
    templates = {"app/templates/secret.yaml": SECRET + "dir: {{ .Template.BasePath }}"}
    assert copies(templates) == {"app/templates/secret.yaml"}


def test_tpl_with_a_text_reading_the_template_name_is_not_copied() -> None:
    templates = {"app/templates/secret.yaml": SECRET + "note: {{ tpl .Values.note . }}"}
    assert copies(templates) == {"app/templates/secret.yaml"}
    assert copies(templates, TplText(names_template=True)) is None
    assert tpl_text("{{ .Template.Name }}").names_template
    assert not tpl_text("{{ .Template.BasePath }}").names_template


def test_a_copied_template_changing_values_is_not_copied() -> None:
    templates = {
        "app/templates/secret.yaml": '{{- $_ := set .Values "count" 1 }}\n' + SECRET,
    }
    assert copies(templates) is None


def test_a_template_changing_values_elsewhere_does_not_stop_the_copies() -> None:
    templates = {
        "app/templates/secret.yaml": SECRET,
        "app/charts/z/templates/defaults.yaml": '{{- $_ := set .Values "tier" "web" }}',
    }
    assert copies(templates) == {"app/templates/secret.yaml"}


def test_a_template_changing_values_between_a_copy_and_its_original_stops_the_copies() -> None:
    templates = {
        "app/templates/secret.yaml": SECRET,
        "app/templates/secret.yaml.changes": '{{- $_ := set .Values "tier" "web" }}',
    }
    assert copies(templates) is None


def test_a_template_defining_names_is_not_copied() -> None:
    templates = {
        "app/templates/banner.yaml": '{{ block "app.banner" . }}{{ uuidv4 }}{{ end }}',
    }
    assert copies(templates) is None
