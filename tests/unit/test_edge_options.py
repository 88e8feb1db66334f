"""`fleetbus edge`'s controller options: the controller runs in the edge process by default with
a kubeconfig, is left out on request, and options that cannot apply are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetbus.cli import build_parser, main
from fleetbus.edge import ControllerSettings, controller_settings


def settings(*words: str) -> ControllerSettings | None:
    args = build_parser("edge").parse_args(["edge", "--bundle", "b", *words])
    return controller_settings(args)


def test_with_a_kubeconfig_the_controller_runs_in_the_edge_process_by_default() -> None:
    assert settings("--kubeconfig", "kc") == ControllerSettings()
    assert settings(
        "--kubeconfig", "kc", "--controller-workers", "8", "--resync", "120", "--skip-crds"
    ) == ControllerSettings(workers=8, resync_seconds=120.0, manage_crds=False)


def test_without_controller_or_with_the_simulator_no_controller_runs() -> None:
    assert settings("--kubeconfig", "kc", "--without-controller") is None
    assert settings("--sim") is None


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (
            ["--sim", "--skip-crds"],
            "--skip-crds: the cluster controller runs only with --kubeconfig",
        ),
        (["--sim", "--without-controller"], "--without-controller: the cluster controller runs"),
        (
            ["--kubeconfig", "kc", "--without-controller", "--controller-workers", "2"],
            "--controller-workers configure the in-process controller",
        ),
    ],
)
def test_options_that_cannot_apply_are_one_clear_error_before_anything_starts(
    words: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    code = main(["edge", "--bundle", str(tmp_path / "none"), "--state-dir", str(state), *words])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not state.exists(), "nothing is written"
