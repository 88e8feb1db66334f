"""Sources that must be refused with a clear message, shared by the render and publish tests.

Each case is a path, the extra arguments to pass after it, and a regular expression the one-line
error message must match (naming the file, object or field at fault).
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent.parent / "data"
HOOKS_CHART = DATA / "charts" / "hooks"
BROKEN_OVERLAY = DATA / "kustomize" / "broken"

BadSource = tuple[Path, list[str], str]

CASE_IDS = (
    "invalid-yaml",
    "missing-api-version",
    "missing-kind",
    "missing-name",
    "duplicate-object",
    "template-error",
    "missing-required-value",
    "values-against-schema",
    "chart-does-not-exist",
    "kustomize-error",
    "empty-input",
    "unknown-phase",
    "invalid-object-name",
    "invalid-taskset-name",
    "missing-values-file",
    "values-for-plain-yaml",
)


def bad_sources(tmp_path: Path) -> dict[str, BadSource]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
    chart = tmp_path / "broken-chart"
    write("broken-chart/Chart.yaml", "apiVersion: v2\nname: broken-chart\nversion: 0.1.0\n")
    write(
        "broken-chart/templates/cm.yaml",
        "kind: ConfigMap\nmetadata:\n  name: {{ .Values.x | nope }}\n",
    )
    null_host = write("null-host.yaml", "database:\n  host: null\n")
    zero = write("zero.yaml", "replicas: 0\n")
    good = write("good.yaml", config.format(name="good"))
    cases: dict[str, BadSource] = {
        "invalid-yaml": (
            write("invalid.yaml", config.format(name="[oops")),
            [],
            r"invalid\.yaml:\d+: invalid YAML: ",
        ),
        "missing-api-version": (
            write("no-api.yaml", "kind: ConfigMap\nmetadata: {name: a}\n"),
            [],
            r"no-api\.yaml:1: ConfigMap/a: apiVersion is missing",
        ),
        "missing-kind": (
            write("no-kind.yaml", "---\napiVersion: v1\nmetadata: {name: a}\n"),
            [],
            r"no-kind\.yaml:2: a document: kind is missing",
        ),
        "missing-name": (
            write("no-name.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"),
            [],
            r"no-name\.yaml:1: a ConfigMap: metadata\.name is missing",
        ),
        "duplicate-object": (
            write("dupes/a.yaml", config.format(name="same")).parent,
            [],
            r"ConfigMap/default/same is defined more than once: at .*a\.yaml:1 and at .*b\.yaml:1",
        ),
        "template-error": (
            chart,
            [],
            r"Helm chart broken-chart failed to render: .*broken-chart/templates/cm\.yaml:3",
        ),
        "missing-required-value": (
            HOOKS_CHART,
            ["--values", str(null_host)],
            r"failed to render: .*database\.host is required",
        ),
        "values-against-schema": (
            HOOKS_CHART,
            ["--values", str(zero)],
            r"values rejected by Helm chart hooks's values\.schema\.json: .*/replicas",
        ),
        "chart-does-not-exist": (
            tmp_path / "no-such-chart",
            ["--format", "helm"],
            r"no-such-chart does not exist",
        ),
        "kustomize-error": (
            BROKEN_OVERLAY,
            [],
            r"kustomize build of .*broken failed: .*does-not-exist\.yaml",
        ),
        "empty-input": (
            write("empty.yaml", "# nothing to see\n---\n"),
            [],
            r"empty\.yaml holds no Kubernetes objects",
        ),
        "unknown-phase": (
            write(
                "phase.yaml",
                config.format(name="a") + "  annotations:\n    fleetbus.io/phase: later\n",
            ),
            [],
            r"phase\.yaml:1: ConfigMap/a: unknown phase 'later' in annotation fleetbus\.io/phase",
        ),
        "invalid-object-name": (
            write("upper.yaml", config.format(name="Web_App")),
            [],
            r"upper\.yaml:1: ConfigMap/Web_App: metadata\.name 'Web_App' must be a DNS-1123",
        ),
        "invalid-taskset-name": (
            good,
            ["--name", "Bad_Name"],
            r"invalid taskset name 'Bad_Name'",
        ),
        "missing-values-file": (
            HOOKS_CHART,
            ["--values", str(tmp_path / "absent.yaml")],
            r"values file .*absent\.yaml does not exist",
        ),
        "values-for-plain-yaml": (
            good,
            ["--values", str(zero)],
            r"values apply to Helm charts only",
        ),
    }
    write("dupes/b.yaml", config.format(name="same"))
    assert tuple(cases) == CASE_IDS
    return cases
