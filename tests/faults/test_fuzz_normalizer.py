"""R5 fuzzing: the normalizer takes any bytes and either makes a Taskset or says what is wrong.

`normalize` reads what users upload (the CLI's files and stdin, the API's request bodies): plain
YAML streams, and chart archives (gzip), rendered by Helm's engine in-process. Whatever the
bytes, it must return a Taskset that survives its own wire form, or raise a `FleetbusError`
(shown as one clear line) — never another exception, never a hang.

Inputs: random bytes; YAML token soup (anchors, aliases, tags, flow and block syntax, document
markers); YAML dumps of Kubernetes-shaped objects with random fields and hook/phase annotations;
random gzip; chart archives with a random Chart.yaml, values and template soup (Go template
actions, `required`, `fail`, `include`, `toYaml`).
"""

from __future__ import annotations

import gzip
import io
import tarfile
from typing import Any

import pytest
import yaml
from hypothesis import strategies as st

from normalizer import NormalizeOptions, normalize
from taskset.codec import decode_taskset, encode_taskset
from taskset.errors import FleetbusError
from tests.faults.fuzzing import json_values, run_fuzz
from tests.faults.harness import LONG, record_figures

YAML_TOKENS = [
    "---\n",
    "...\n",
    "\n",
    "  ",
    "    ",
    "- ",
    ": ",
    "apiVersion: v1",
    "apiVersion: apps/v1",
    "kind: ConfigMap",
    "kind: Secret",
    "kind: List",
    "kind: Namespace",
    "kind: Job",
    "items:",
    "metadata:",
    "name: x",
    "name: Bad_Name",
    "namespace: y",
    "data:",
    "stringData:",
    "annotations:",
    "helm.sh/hook: pre-install",
    "helm.sh/hook: test",
    "helm.sh/hook-weight: x",
    "fleetbus.io/phase: init",
    "fleetbus.io/phase: nope",
    "&a ",
    "*a",
    "*b",
    "&b [*a, *a]",
    "!!binary ",
    "!!python/object/apply:os.system ['true']",
    "!!set ",
    "!!omap ",
    "? ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    '"',
    "|",
    ">-",
    "# c",
    "%YAML 1.1\n",
    "<<: *a",
    "\t",
    "2026-01-01",
    "0x1F",
    "~",
    "null",
    "yes",
    ".inf",
    "1e400",
    "123456789012345678901234567890",
    "\ufeff",
]

yaml_soup = st.lists(
    st.sampled_from(YAML_TOKENS) | st.text(max_size=6), min_size=1, max_size=30
).map(lambda parts: "".join(parts).encode())

ANNOTATIONS = [
    "helm.sh/hook",
    "helm.sh/hook-weight",
    "helm.sh/hook-delete-policy",
    "fleetbus.io/phase",
    "fleetbus.io/wait",
]

manifests = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["v1", "apps/v1", "batch/v1", "apiextensions.k8s.io/v1"])
        | json_values,
        "kind": st.sampled_from(
            ["ConfigMap", "Secret", "Namespace", "Deployment", "Job", "CustomResourceDefinition"]
        )
        | json_values,
        "metadata": st.fixed_dictionaries(
            {"name": st.sampled_from(["a", "b", "web", "x" * 300]) | json_values},
            optional={
                "namespace": st.sampled_from(["default", "prod", "Bad NS"]) | json_values,
                "annotations": st.dictionaries(
                    st.sampled_from(ANNOTATIONS),
                    st.sampled_from(["pre-install", "post-install", "test", "init", "5", "x"])
                    | json_values,
                    max_size=3,
                ),
            },
        )
        | json_values,
    },
    optional={"data": json_values, "spec": json_values, "items": st.lists(json_values)},
)

yaml_documents = st.lists(manifests, min_size=1, max_size=4).map(
    lambda documents: yaml.safe_dump_all(documents).encode()
)

TEMPLATE_TOKENS = [
    "{{ .Values.x }}",
    "{{ .Values.missing.deeper }}",
    "{{ if .Values.y }}",
    "{{ else }}",
    "{{ end }}",
    "{{ range .Values.z }}",
    '{{ include "x" . }}',
    '{{ define "x" }}',
    '{{ required "need q" .Values.q }}',
    '{{ fail "refused" }}',
    "{{ toYaml .Values | nindent 2 }}",
    "{{ .Release.Name }}",
    "{{ .Chart.Name }}",
    "{{",
    "}}",
    "{{-",
    "-}}",
    "{{ $x := 1 }}",
    '{{ lookup "v1" "Secret" "ns" "n" }}',
    "{{ tpl .Values.t . }}",
]

template_soup = st.lists(
    st.sampled_from(TEMPLATE_TOKENS) | st.sampled_from(YAML_TOKENS) | st.text(max_size=6),
    max_size=25,
).map("".join)

chart_yaml = st.one_of(
    st.tuples(
        st.sampled_from(["web", "fuzz-chart", "Bad_Chart", ""]) | st.text(max_size=8),
        st.sampled_from(["1.0.0", "0.1.0", "not-semver", ""]),
    ).map(lambda nv: f"apiVersion: v2\nname: {nv[0]}\nversion: {nv[1]}\n"),
    yaml_soup.map(lambda data: data.decode()),
)


def tar_gz(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as archive,
    ):
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@st.composite
def chart_archives(draw: st.DrawFn) -> bytes:
    root = draw(st.sampled_from(["web", "fuzz", "../escape", "/abs", "a/b"]))
    files = {f"{root}/Chart.yaml": draw(chart_yaml)}
    for index in range(draw(st.integers(0, 3))):
        files[f"{root}/templates/t{index}.yaml"] = draw(template_soup)
    if draw(st.booleans()):
        values: Any = draw(json_values)
        files[f"{root}/values.yaml"] = yaml.safe_dump(values)
    return tar_gz(files)


normalizer_inputs = st.one_of(
    st.binary(max_size=512),
    yaml_soup,
    yaml_documents,
    st.binary(max_size=256).map(lambda data: gzip.compress(data, mtime=0)),
    chart_archives(),
)


def normalize_or_refuse(data: bytes) -> None:
    try:
        outcome: object = normalize(data, NormalizeOptions(name="fuzz"))
    except FleetbusError as refused:
        outcome = refused
    if isinstance(outcome, FleetbusError):
        message = str(outcome)
        assert message.strip(), f"{type(outcome).__name__} with an empty message"
        assert "Traceback" not in message
        return
    taskset = outcome.taskset  # type: ignore[attr-defined]
    assert decode_taskset(encode_taskset(taskset)) == taskset


@pytest.mark.parametrize(
    ("fuzz_seed", "cases"),
    [
        pytest.param(4711, 600, id="seed=4711-cases=600"),
        pytest.param(815, 10_000, id="seed=815-cases=10000", marks=LONG),
    ],
)
def test_the_normalizer_makes_a_taskset_or_a_clear_error_whatever_the_bytes(
    fuzz_seed: int, cases: int
) -> None:
    ran = run_fuzz(
        normalizer_inputs, normalize_or_refuse, cases=cases, fuzz_seed=fuzz_seed, deadline_ms=5000
    )
    assert ran >= cases
    record_figures("R5 fuzz normalizer", seed=fuzz_seed, cases=ran, crashes=0, hangs=0)
