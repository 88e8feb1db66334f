"""An uploaded Kustomize overlay builds from its own files and can make the hub fetch nothing.

Two lines of defence, each tested on its own. The allow-list (`normalizer.kustomize_references`)
refuses every remote spelling in every field that loads something, before any process starts:
an audit hook watches this process for `subprocess`/`exec`/`spawn` while the upload is handled.
The sandbox (`normalizer.kustomize`) is tested with the check skipped: kubectl is handed remote
references directly and still reaches no server and runs no git.
"""

from __future__ import annotations

import http.server
import io
import os
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from api.errors import InvalidRequest
from api.routes.tasksets import PublishSpec, normalize_upload
from normalizer import kustomize
from normalizer.errors import KustomizeFailed
from tests.security.kustomize_bypasses import BYPASSES, CONFIGMAP, FIELDS, Field, overlay_with

SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system"})
_spawned: list[str] | None = None


def _watch_spawns(event: str, args: tuple[Any, ...]) -> None:
    if _spawned is not None and event in SPAWN_EVENTS:
        _spawned.append(f"{event} {args[:2]!r}")


sys.addaudithook(_watch_spawns)


@pytest.fixture
def spawned() -> Iterator[list[str]]:
    """Every process this test starts, as the interpreter's audit events report it."""
    global _spawned
    _spawned = []
    try:
        yield _spawned
    finally:
        _spawned = None


def tar_gz(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()


@pytest.mark.parametrize("field", FIELDS, ids=lambda field: field.id)
def test_every_remote_spelling_in_every_field_is_refused_naming_it_before_any_process_starts(
    field: Field, tmp_path: Path, spawned: list[str]
) -> None:
    for number, reference in enumerate(BYPASSES):
        overlay = overlay_with(tmp_path / str(number), field, reference)
        with pytest.raises(InvalidRequest) as refused:
            normalize_upload(tar_gz(overlay), "overlay.tar.gz", PublishSpec(name="remote"))
        message = str(refused.value)
        assert refused.value.status == 400
        assert f"overlay/kustomization.yaml: {field.names} " in message, message
        assert "is refused: " in message, message
        assert "\n" not in message
    assert spawned == [], f"processes started for refused uploads: {spawned}"


def test_an_overlay_using_local_files_in_every_field_still_builds(tmp_path: Path) -> None:
    base = tmp_path / "app" / "base"
    base.mkdir(parents=True)
    (base / "cm.yaml").write_text(CONFIGMAP)
    (base / "kustomization.yaml").write_text("resources:\n- cm.yaml\n")
    overlay = tmp_path / "app" / "overlay"
    overlay.mkdir()
    (overlay / "settings.env").write_text("MODE=prod\n")
    (overlay / "greeting.txt").write_text("hello\n")
    (overlay / "patch.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {patched: 'yes'}\n"
    )
    (overlay / "kustomization.yaml").write_text(
        "resources:\n- ../base/\n"
        "patches:\n- path: patch.yaml\n"
        "configMapGenerator:\n- name: gen\n  envs: [settings.env]\n  files: [hi=greeting.txt]\n"
        "generatorOptions: {disableNameSuffixHash: true}\n"
    )
    built = normalize_upload(
        tar_gz(tmp_path / "app"), "app.tar.gz", PublishSpec(name="local", path="overlay")
    )
    objects = {step.object["metadata"]["name"]: step.object for _, step in built.taskset.steps()}
    assert set(objects) == {"a", "gen"}
    assert objects["a"]["data"] == {"patched": "yes"}
    assert objects["gen"]["data"] == {"MODE": "prod", "hi": "hello\n"}


class _Recorder(http.server.BaseHTTPRequestHandler):
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        body = CONFIGMAP.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[str]:
    """An HTTP server on loopback that answers every GET with a ConfigMap; yields its URL."""
    _Recorder.asked = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_kubectl_handed_a_url_directly_reaches_no_server(tmp_path: Path, recorder: str) -> None:
    if not kustomize.network_namespace_prefix():
        pytest.skip("this kernel refuses unprivileged network namespaces")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(f"resources:\n- {recorder}/internal.yaml\n")
    with pytest.raises(KustomizeFailed):
        kustomize.build_kustomization(overlay)  # the check is skipped on purpose
    assert _Recorder.asked == [], f"kubectl fetched {_Recorder.asked}"


@pytest.mark.parametrize("network_namespace", [True, False], ids=["netns", "environment-only"])
def test_kubectl_handed_a_git_repository_directly_runs_no_git(
    network_namespace: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not network_namespace:
        monkeypatch.setattr(kustomize, "network_namespace_prefix", lambda: ())
    tools = tmp_path / "bin"
    tools.mkdir()
    ran = tmp_path / "git-ran"
    fake_git = tools / "git"
    fake_git.write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")
    fake_git.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources:\n- https://github.com/org/repo//base?ref=main\n"
    )
    with pytest.raises(KustomizeFailed):
        kustomize.build_kustomization(overlay)
    assert not ran.exists(), "kubectl found and ran a git from the hub's PATH"
