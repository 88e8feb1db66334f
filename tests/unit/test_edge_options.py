"""`fleetbus edge`'s controller options: the controller runs in the edge process by default with
a kubeconfig, is left out on request, and options that cannot apply are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetbus.bundle import EdgeSettings, leaf_config
from fleetbus.cli import build_parser, main
from fleetbus.edge import ControllerSettings, LeafLimits, controller_settings, leaf_limits


def settings(*words: str) -> ControllerSettings | None:
    args = build_parser("edge").parse_args(["edge", "--bundle", "b", *words])
    return controller_settings(args)


def limits(*words: str) -> LeafLimits:
    return leaf_limits(build_parser("edge").parse_args(["edge", "--bundle", "b", "--sim", *words]))


def test_the_leaf_is_sized_for_an_edge_by_default_and_on_request() -> None:
    assert limits() == LeafLimits(memory_limit="32MiB", max_file_store=2560 << 20, procs=1)
    assert limits(
        "--leaf-memory-limit", "48MiB", "--leaf-max-file-store", "1GiB", "--leaf-procs", "2"
    ) == LeafLimits(memory_limit="48MiB", max_file_store=1 << 30, procs=2)
    assert limits("--leaf-memory-limit", "off").memory_limit == ""
    text = leaf_config(
        EdgeSettings(cluster="c1", hub_urls=["tls://hub:443"]),
        port=4222,
        monitor_port=8222,
        store_dir="/s",
        connector_password="p",
        ca_file="/ca",
        cert_file="/crt",
        key_file="/key",
        creds_file="/creds",
        max_file_store=1 << 30,
    )
    assert f"max_file_store: {1 << 30}" in text
    assert f"max_memory_store: {8 << 20}" in text


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
        (["--sim", "--context", "prod"], "--context names a context of --kubeconfig"),
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


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--leaf-memory-limit", "8MiB"], "--leaf-memory-limit: 8MiB is below the smallest limit"),
        (["--leaf-memory-limit", "lots"], "--leaf-memory-limit: expected a size like 32MiB"),
        (["--leaf-max-file-store", "1MiB"], "--leaf-max-file-store: 1MiB is below 64MiB"),
        (["--leaf-procs", "0"], "--leaf-procs: must be a whole number from 1 to 64, got 0"),
    ],
)
def test_a_leaf_size_out_of_bounds_is_refused_by_the_parser(
    words: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["edge", "--bundle", "b", "--sim", *words])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


async def test_the_kubernetes_executor_takes_the_context_named_on_the_command_line(
    tmp_path: Path,
) -> None:
    from edge_connector.errors import ConnectorError
    from fleetbus.edge import load_executor

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        '{"clusters": [{"name": "c", "cluster": {"server": "https://api:6443"}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}],'
        ' "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u",'
        ' "namespace": "team-a"}}]}'
    )
    words = ["edge", "--bundle", "b", "--kubeconfig", "kc", "--context", "dev"]
    assert build_parser("edge").parse_args(words).context == "dev"
    executor = load_executor(kubeconfig, "c1", "dev")
    try:
        assert getattr(executor, "namespace", None) == "team-a"
    finally:
        await executor.close()
    with pytest.raises(ConnectorError, match=r"--context 'prod' is not among its contexts \(dev\)"):
        load_executor(kubeconfig, "c1", "prod")
