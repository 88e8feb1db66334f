"""Plain YAML (files, directories, stdin) and `fleetbus render`: phases, output, bad input."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import yaml

from fleetbus.cli import main
from normalizer import NormalizeOptions, normalize
from normalizer.errors import UnsupportedSource
from taskset.secrets import MASK
from tests.integration.bad_sources import CASE_IDS, HOOKS_CHART, bad_sources

DATA = Path(__file__).parent.parent / "data"
BUNDLE = DATA / "yaml" / "bundle"
OVERLAY = DATA / "kustomize" / "overlay"
EXAMPLES = Path(__file__).parent.parent.parent / "examples"


def test_the_bundle_directory_lands_in_phases_in_install_order() -> None:
    taskset = normalize(BUNDLE, NormalizeOptions(namespace="shop")).taskset
    assert [str(s.ref) for s in taskset.init] == []
    assert [str(s.ref) for s in taskset.install] == [
        "Namespace/shop",
        "CustomResourceDefinition/carts.shop.example.com",
        "Service/shop/storefront",
        "Deployment/shop/storefront",
        "Job/shop/check",
        "Cart/shop/default-cart",
    ]
    assert [str(s.ref) for s in taskset.post_install] == ["Job/shop/seed-catalogue"]
    assert [str(s.ref) for s in taskset.pre_delete] == ["Job/shop/final-backup"]
    assert [s.wait for s in taskset.install if s.ref.kind == "Job"] == ["complete"]
    assert taskset.name == "bundle"
    assert taskset.source is not None
    assert taskset.source.format == "yaml"


def test_hidden_directories_and_other_files_are_not_read() -> None:
    taskset = normalize(BUNDLE, NormalizeOptions(namespace="shop")).taskset
    assert "must-not-appear" not in {s.ref.name for _, s in taskset.steps()}


def test_a_single_file_is_a_source_too() -> None:
    taskset = normalize(BUNDLE / "app.yaml", NormalizeOptions(namespace="shop")).taskset
    assert [s.ref.kind for s in taskset.install] == ["Service", "Deployment", "Cart"]
    assert taskset.name == "app"


def test_the_yaml_example_moves_its_namespace_and_jobs_into_their_phases() -> None:
    taskset = normalize(EXAMPLES / "yaml" / "status-board").taskset
    assert [str(s.ref) for s in taskset.init] == [
        "Namespace/status-board",
        "Job/status-board/prepare",
    ]
    assert [s.ref.kind for s in taskset.install] == [
        "CustomResourceDefinition",
        "ConfigMap",
        "Service",
        "Deployment",
        "HttpCheck",
    ]
    assert [s.ref.name for s in taskset.post_install] == ["announce"]
    assert [s.ref.name for s in taskset.pre_delete] == ["farewell"]


@pytest.mark.parametrize(
    "path",
    [
        EXAMPLES / "helm" / "web",
        EXAMPLES / "kustomize" / "base",
        EXAMPLES / "kustomize" / "overlays" / "staging",
        EXAMPLES / "yaml" / "status-board",
    ],
    ids=lambda p: p.name,
)
def test_every_example_renders(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(path), "--namespace", "demo", "-o", "json"]) == 0
    rendered = json.loads(capsys.readouterr().out)
    assert (
        sum(len(rendered[phase]) for phase in ("init", "install", "postInstall", "preDelete")) > 2
    )


def test_stdin_is_read_as_a_yaml_stream(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = (BUNDLE / "app.yaml").read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stream)))
    assert main(["render", "-", "--name", "piped", "-n", "shop", "-o", "json"]) == 0
    rendered = json.loads(capsys.readouterr().out)
    assert rendered["name"] == "piped"
    assert [s["object"]["kind"] for s in rendered["install"]] == ["Service", "Deployment", "Cart"]


def test_a_stream_needs_a_name() -> None:
    with pytest.raises(UnsupportedSource, match="pass --name"):
        normalize(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")


def test_json_output_is_one_document_with_the_four_phases_holding_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["render", str(HOOKS_CHART), "--name", "rel", "-o", "json"]) == 0
    rendered = json.loads(capsys.readouterr().out)
    assert {"init", "install", "postInstall", "preDelete"} <= set(rendered)
    assert rendered["init"][0]["object"]["kind"] == "CustomResourceDefinition"
    assert rendered["preDelete"][-1]["object"]["metadata"]["name"] == "post-delete"
    assert rendered["postInstall"][0]["hook"]["weight"] == -1


@pytest.mark.parametrize("output", ["yaml", "json"])
@pytest.mark.parametrize("source", [HOOKS_CHART, OVERLAY, BUNDLE], ids=lambda p: p.name)
def test_render_output_is_byte_identical_every_time(
    source: Path, output: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    runs = []
    for _ in range(2):
        assert main(["render", str(source), "-n", "shop", "-o", output]) == 0
        runs.append(capsysbinary.readouterr().out)
    assert runs[0] == runs[1]
    assert len(runs[0]) > 100
    if output == "yaml":
        assert yaml.safe_load(runs[0])["namespace"] == "shop"


@pytest.mark.parametrize(
    ("source", "secret_value"),
    [(HOOKS_CHART, "s3cr3t"), (OVERLAY, "aHVudGVyMg==")],
    ids=["helm-string-data", "kustomize-data"],
)
def test_secret_values_are_masked_unless_asked_for(
    source: Path, secret_value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", str(source), "-o", "json"]) == 0
    masked = capsys.readouterr().out
    assert secret_value not in masked
    assert MASK in masked
    assert main(["render", str(source), "-o", "json", "--show-secrets"]) == 0
    shown = capsys.readouterr().out
    assert secret_value in shown


def test_left_out_hooks_are_noted_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(HOOKS_CHART), "--name", "rel"]) == 0
    err = capsys.readouterr().err
    assert err.count("fleetbus: note: ") == 4
    assert "Pod/rel-test: left out (a helm test hook)" in err


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_refused_with_one_clear_line_and_exit_code_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, extra, expected = bad_sources(tmp_path)[case]
    assert main(["render", str(path), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fleetbus: error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in captured.err
