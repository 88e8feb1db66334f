"""fleetbus reads YAML exactly as sigs.k8s.io/yaml does: a differential test against Go.

The oracle is the real library (`infra/yamloracle`). Two inputs: a generated table of tricky
scalars (each as a value and as a key, plain and quoted), and every YAML document of the
corpus (rendered charts split as Helm splits them, values files, CRDs, kustomize output).
"""

from __future__ import annotations

import itertools
import json
import subprocess

import helm_python

from normalizer.documents import parse_documents, split_helm_manifest
from normalizer.errors import InvalidYaml
from tests.corpus_cases import CHARTS, KUSTOMIZATIONS
from tests.yaml_oracle import OracleResult, comparable, convert_with_oracle

WORDS = [
    "y",
    "Y",
    "yes",
    "Yes",
    "YES",
    "yEs",
    "n",
    "N",
    "no",
    "No",
    "NO",
    "on",
    "On",
    "ON",
    "oN",
    "off",
    "Off",
    "OFF",
    "true",
    "True",
    "TRUE",
    "tRUE",
    "false",
    "False",
    "FALSE",
    "null",
    "Null",
    "NULL",
    "nULL",
    "~",
    "=",
    "<<x",
    "-",
    ".",
    "..",
    "+",
    "_",
    ".inf",
    ".Inf",
    "-.inf",
    "+.INF",
    ".nan",
    ".NaN",
    "inf",
    "nan",
    "Infinity",
]
NUMBER_BODIES = [
    "0",
    "00",
    "08",
    "010",
    "0777",
    "0o17",
    "0O17",
    "0o",
    "0o8",
    "0x1F",
    "0X1f",
    "0x",
    "0xg",
    "0b101",
    "0B11",
    "0b",
    "0b2",
    "1_000",
    "1__0",
    "1_",
    "_1",
    "1_0.5",
    "12:30",
    "190:20:30",
    "1:20",
    "1.",
    ".5",
    "0.",
    "1.5",
    "1e3",
    "1E3",
    "1e+3",
    "1e-3",
    "1e",
    "1e+",
    "12e03",
    "0.1e+2",
    "1.5e300",
    "1e400",
    "0.0000001",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "1.2.3",
    "1,000",
    "0x1p3",
    "1_000_000.5e3",
    "0_7",
]
SCALARS = WORDS + [sign + body for sign, body in itertools.product(("", "+", "-"), NUMBER_BODIES)]


def documents_for(scalar: str) -> list[str]:
    quoted = json.dumps(scalar)
    return [
        f"value: {scalar}\n",
        f"value: {quoted}\n",
        f"{scalar}: value\n",
        f"list: [{scalar}]\n",
        f"nested:\n  - {scalar}\n",
    ]


def fleetbus_reading(text: str) -> OracleResult:
    """What fleetbus makes of one document, in the oracle's terms."""
    try:
        documents = parse_documents(text, "table")
    except InvalidYaml as e:
        strict = "duplicate key" in str(e)
        return OracleResult(
            value=None, error=None if strict else str(e), strict_error=str(e) if strict else None
        )
    if not documents:
        return OracleResult(value=None, error=None, strict_error=None)
    return OracleResult(value=documents[0].manifest, error=None, strict_error=None)


def differences(texts: list[str]) -> list[str]:
    found: list[str] = []
    for text, expected in zip(texts, convert_with_oracle(texts), strict=True):
        ours = fleetbus_reading(text)
        if expected.error is not None:
            if ours.error is None and ours.strict_error is None:
                found.append(
                    f"{text!r}: Go refuses it ({expected.error}), fleetbus reads {ours.value!r}"
                )
            continue
        if expected.strict_error is not None:
            if ours.strict_error is None:
                found.append(
                    f"{text!r}: Go's strict reading refuses it ({expected.strict_error}), "
                    "fleetbus accepts it"
                )
            continue
        if ours.error is not None or ours.strict_error is not None:
            found.append(
                f"{text!r}: Go reads {expected.value!r}, "
                f"fleetbus refuses it: {ours.error or ours.strict_error}"
            )
            continue
        if expected.value is None and ours.value is None:
            continue
        if comparable(ours.value) != comparable(expected.value):
            found.append(f"{text!r}: Go reads {expected.value!r}, fleetbus reads {ours.value!r}")
    return found


def test_every_tricky_scalar_reads_as_sigs_k8s_io_yaml_reads_it() -> None:
    # Not in the table: a mapping with both `1:` and `'1':`. Go decodes two keys and then
    # names both "1" in map order, which is random, so Go itself gives either value.
    texts = [text for scalar in SCALARS for text in documents_for(scalar)]
    texts += [
        "a: 1\na: 2\n",
        "a: 1\n'a': 2\n",
        "base: &b {k: 1, j: 2}\nchild:\n  <<: *b\n  k: 3\n",
        "a: !!binary aGVsbG8=\n",
        "a: !!str 12\n",
        "a: !!int 12\n",
        "a: !!float 12\n",
        "a: |\n  text\n  ---\n",
        "{1: a, 2.5: b, true: c, 1e3: d, 0.1: e, 1e6: f}\n",
        "a: b\n...\n",
    ]
    assert differences(texts) == []


def corpus_documents() -> list[str]:
    texts: list[str] = []
    for case in CHARTS:
        for path in sorted(case.directory.rglob("*.yaml")):
            if "/templates/" not in path.as_posix():
                texts.append(path.read_text())
        chart = helm_python.Chart.load(case.directory)
        with chart:
            rendered = chart.render(
                {}, name=case.release, namespace=case.namespace, is_install=True
            )
        for template in sorted(rendered):
            if not template.endswith("NOTES.txt"):
                texts.extend(piece for _, piece in split_helm_manifest(rendered[template]))
    for directory in KUSTOMIZATIONS:
        built = subprocess.run(
            ["kubectl", "kustomize", str(directory)], capture_output=True, check=True, text=True
        ).stdout
        texts.extend(piece for _, piece in split_helm_manifest(built))
    return [text for text in texts if text.strip()]


def test_every_document_of_the_corpus_reads_as_sigs_k8s_io_yaml_reads_it() -> None:
    texts = corpus_documents()
    assert len(texts) > 300
    assert differences(texts) == []
