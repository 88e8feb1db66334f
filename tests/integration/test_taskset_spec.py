"""The taskset spec a user writes (`fleetbus.yaml`, annotations, flags): read, checked, applied."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from fleetbus.cli import main
from normalizer import NormalizeOptions, normalize
from normalizer.errors import InvalidTasksetSpec

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  annotations:
    fleetbus.io/drift: report
    fleetbus.io/ignore-paths: /data/free, /data/other
data: {a: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: seed-input
data: {rows: "42"}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: seed
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: seed, image: busybox, command: ["true"]}]
"""

SPEC = """\
driftPolicy: correct
ignorePaths: [/spec/replicas]
adopt: true
objects:
  - kind: Deployment
    name: web
    driftPolicy: ignore
    ignorePaths: [/metadata/annotations]
  - kind: ConfigMap
    name: settings
    adopt: false
stepJobs:
  - job: seed
    object: {kind: ConfigMap, name: seed-input}
"""


def source(tmp_path: Path, spec: str | None = SPEC, app: str = APP) -> Path:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "app.yaml").write_text(app)
    if spec is not None:
        (directory / "fleetbus.yaml").write_text(textwrap.dedent(spec))
    return directory


def test_a_fleetbus_yaml_beside_the_source_sets_policies_adoption_and_step_jobs(
    tmp_path: Path,
) -> None:
    taskset = normalize(source(tmp_path), NormalizeOptions(namespace="shop")).taskset

    assert taskset.drift_policy == "correct"
    assert taskset.ignore_paths == ["/spec/replicas"]
    assert taskset.adopt is True
    steps = {step.ref.name: step for _, step in taskset.steps()}
    assert set(steps) == {"web", "settings", "seed-input"}, "the Job became a Step Job"
    assert steps["web"].drift_policy == "ignore"
    assert steps["web"].ignore_paths == ["/metadata/annotations"]
    assert steps["settings"].drift_policy == "report", "from its annotation"
    assert steps["settings"].ignore_paths == ["/data/free", "/data/other"]
    assert steps["settings"].adopt is False
    job = steps["seed-input"].job
    assert job is not None
    assert job["metadata"]["name"] == "seed"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
    assert taskset.settings["stepJobs"][0]["job"] == "seed"


def test_annotations_alone_set_an_objects_policy(tmp_path: Path) -> None:
    taskset = normalize(source(tmp_path, spec=None), NormalizeOptions(namespace="shop")).taskset
    steps = {step.ref.name: step for _, step in taskset.steps()}
    assert steps["settings"].drift_policy == "report"
    assert steps["web"].drift_policy is None
    assert taskset.drift_policy == "correct"
    assert "seed" in steps, "without a spec the Job is an object like any other"


def test_command_line_fields_win_over_the_file(tmp_path: Path) -> None:
    options = NormalizeOptions(
        namespace="shop",
        settings={"driftPolicy": "report", "ignorePaths": ["/spec/paused"], "adopt": False},
        settings_label="the command line",
    )
    taskset = normalize(source(tmp_path), options).taskset
    assert taskset.drift_policy == "report"
    assert taskset.ignore_paths == ["/spec/paused"]
    assert taskset.adopt is False
    assert {step.ref.name for _, step in taskset.steps()} == {"web", "settings", "seed-input"}


BAD_SPECS = [
    ("driftPolicy: fix\n", "driftPolicy: 'fix' is not a drift policy; use correct, report, ignore"),
    ("ignorePaths: [spec/replicas]\n", "ignorePaths[0]: 'spec/replicas' is not a JSON pointer"),
    ("ignorePaths: /spec/replicas\n", "ignorePaths: must be a list of JSON pointers"),
    ("adopt: yes please\n", "adopt: must be true or false"),
    ("drift: report\n", "drift: unknown field; known fields are driftPolicy"),
    (
        "objects:\n  - kind: Deployment\n    name: web\n    driftPolicy: sometimes\n",
        "objects[0].driftPolicy: 'sometimes' is not a drift policy",
    ),
    ("objects:\n  - kind: Deployment\n", "objects[0].name: is required"),
    ("objects:\n  - kind: Service\n    name: web\n", "objects[0]: no object Service/web"),
    (
        "stepJobs:\n  - job: nope\n    object: {kind: ConfigMap, name: seed-input}\n",
        "stepJobs[0].job: no Job 'nope' in the source",
    ),
    (
        "stepJobs:\n  - job: seed\n    object: {kind: ConfigMap, name: nothing}\n",
        "stepJobs[0].object: no object ConfigMap/nothing",
    ),
    ("stepJobs:\n  - job: seed\n", "stepJobs[0].object: is required"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[m for _, m in BAD_SPECS])
def test_a_bad_spec_is_refused_naming_the_file_and_field(
    tmp_path: Path, spec: str, message: str
) -> None:
    directory = source(tmp_path, spec=spec)
    with pytest.raises(InvalidTasksetSpec) as raised:
        normalize(directory, NormalizeOptions(namespace="shop"))
    assert str(raised.value).startswith(f"{directory / 'fleetbus.yaml'}: ")
    assert message in str(raised.value)


def test_a_bad_annotation_is_refused_naming_the_object(tmp_path: Path) -> None:
    bad = APP.replace("fleetbus.io/drift: report", "fleetbus.io/drift: loudly")
    with pytest.raises(InvalidTasksetSpec) as raised:
        normalize(source(tmp_path, spec=None, app=bad), NormalizeOptions(namespace="shop"))
    assert "ConfigMap/shop/settings: annotation fleetbus.io/drift: 'loudly'" in str(raised.value)


def test_a_hook_job_cannot_be_a_step_job(tmp_path: Path) -> None:
    hooked = APP.replace(
        "  name: seed\n", "  name: seed\n  annotations:\n    helm.sh/hook: post-install\n"
    )
    with pytest.raises(InvalidTasksetSpec, match=r"stepJobs\[0\].job: Job 'seed' is a Helm hook"):
        normalize(source(tmp_path, app=hooked), NormalizeOptions(namespace="shop"))


def test_render_shows_the_spec_and_refuses_a_bad_flag_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = source(tmp_path)
    assert (
        main(["render", str(directory), "-n", "shop", "-o", "json", "--drift-policy", "report"])
        == 0
    )
    rendered = json.loads(capsys.readouterr().out)
    assert rendered["driftPolicy"] == "report"
    assert rendered["adopt"] is True

    code = main(["render", str(directory), "-n", "shop", "--ignore-path", "spec/replicas"])
    captured = capsys.readouterr()
    assert code != 0
    assert "the command line: ignorePaths[0]: 'spec/replicas' is not a JSON pointer" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
