"""Publishing and retiring over HTTP: uploads of every format, and uploads that are refused."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import Role
from events.catalog import TasksetPublished
from events.store import EventStore
from tests.integration.api_harness import live_api

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CONFIGMAP = b"""apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: web
data:
  colour: blue
"""


def tar_gz(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A .tar.gz of `entries`: (name, content) files, or hand-made TarInfo headers."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                archive.addfile(entry)
            else:
                name, content = entry
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def tar_gz_of(directory: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=arcname)
    return buffer.getvalue()


def link(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


async def publish(
    client: httpx.AsyncClient, source: bytes, filename: str = "source.tgz", **spec: Any
) -> httpx.Response:
    return await client.post(
        "/api/v1/tasksets",
        data={"spec": json.dumps(spec)},
        files={"source": (filename, source, "application/octet-stream")},
    )


async def test_a_yaml_upload_is_published_and_republishing_it_changes_nothing(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        first = await publish(c, CONFIGMAP, "settings.yaml", name="settings", namespace="web")
        again = await publish(c, CONFIGMAP, "settings.yaml", name="settings", namespace="web")
        placed = await publish(
            c,
            CONFIGMAP,
            "settings.yaml",
            name="settings",
            namespace="web",
            placement={"selector": "env=prod"},
            rollout={"batch_size": 2},
        )
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1
    assert first.json()["changed"] is True
    assert again.json()["changed"] is False
    assert again.json()["version"] == 1
    assert placed.json()["version"] == 2
    stored = [s.event async for s in event_store.read()]
    assert [type(e).__name__ for e in stored] == ["TasksetPublished", "TasksetPublished"]
    latest = stored[-1]
    assert isinstance(latest, TasksetPublished)
    assert latest.actor == "user:test-publisher"
    assert latest.placement.selector == "env=prod"
    assert latest.rollout.batch_size == 2


async def test_a_helm_chart_archive_is_published_with_its_values(
    event_store: EventStore, tmp_path: Path
) -> None:
    chart = tar_gz_of(EXAMPLES / "helm" / "web", "web")
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(c, chart, "web-0.1.0.tgz", values={"replicaCount": 3})
    assert response.status_code == 201, response.text
    assert response.json()["taskset"] == "web"
    [stored] = [s.event async for s in event_store.read()]
    assert isinstance(stored, TasksetPublished)
    assert stored.format == "helm"
    assert stored.values["replicaCount"] == 3
    assert stored.chart_archive.startswith("sha256:")


async def test_a_kustomize_overlay_is_published_from_a_path_inside_the_archive(
    event_store: EventStore, tmp_path: Path
) -> None:
    tree = tar_gz_of(EXAMPLES / "kustomize", "kustomize")
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(
            c, tree, "kustomize.tar.gz", name="web-staging", path="overlays/staging"
        )
    assert response.status_code == 201, response.text
    [stored] = [s.event async for s in event_store.read()]
    assert isinstance(stored, TasksetPublished)
    assert (stored.taskset, stored.format) == ("web-staging", "kustomize")


UNSAFE: list[tuple[str, list[tarfile.TarInfo | tuple[str, bytes]], int, str]] = [
    ("parent path", [("app/../../escape.yaml", CONFIGMAP)], 400, "'..' components"),
    ("absolute path", [("/etc/fleetbus.yaml", CONFIGMAP)], 400, "absolute paths"),
    (
        "symlink out",
        [("app/a.yaml", CONFIGMAP), link("app/passwd", "../../../etc/passwd")],
        400,
        "points outside the archive",
    ),
    ("absolute symlink", [link("app/passwd", "/etc/passwd")], 400, "absolute path"),
    (
        "hard link out",
        [("app/a.yaml", CONFIGMAP), link("app/b.yaml", "/etc/passwd", hard=True)],
        400,
        "absolute paths",
    ),
    (
        "write through a link",
        [link("app/dir", "."), ("app/dir/x.yaml", CONFIGMAP)],
        400,
        "through a symbolic link",
    ),
    ("too many files", [(f"app/{i}.yaml", b"") for i in range(5001)], 413, "more than 5000"),
]


@pytest.mark.parametrize(
    ("entries", "status", "message"),
    [pytest.param(e, s, m, id=name) for name, e, s, m in UNSAFE],
)
async def test_an_unsafe_archive_is_refused_naming_the_entry(
    event_store: EventStore,
    tmp_path: Path,
    entries: list[tarfile.TarInfo | tuple[str, bytes]],
    status: int,
    message: str,
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(c, tar_gz(entries), "app.tar.gz", name="app")
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"].startswith("archive entry "), body
    assert message in body["error"]
    assert body["context"]["entry"]
    assert not (tmp_path / "escape.yaml").exists()
    assert [s async for s in event_store.read()] == []


async def test_an_archive_that_unpacks_too_large_is_refused(
    event_store: EventStore, tmp_path: Path
) -> None:
    bomb = tar_gz([(f"app/big{i}.yaml", b"#" * (15 * 1024 * 1024)) for i in range(5)])
    assert len(bomb) < 1024 * 1024, "compresses to almost nothing"
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(c, bomb, "app.tar.gz", name="app")
    assert response.status_code == 413
    assert "unpacks to more than" in response.json()["error"]


async def test_errors_in_an_upload_name_its_files_never_the_hubs_temporary_directory(
    event_store: EventStore, tmp_path: Path
) -> None:
    empty = tar_gz([("app/notes.yaml", b"# nothing here\n"), ("app/broken.yaml", b"a: [\n")])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(c, empty, "app.tar.gz", name="app")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "broken.yaml" in error
    assert "app.tar.gz" in error
    assert "fleetbus-upload-" not in error
    assert [s async for s in event_store.read()] == []


async def test_a_body_over_the_limit_is_refused_with_413(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(c, b"a: b\n" * (4 * 1024 * 1024), "huge.yaml", name="huge")
    assert response.status_code == 413
    assert response.json()["error"] == "request body too large: the limit is 16,777,216 bytes"


BAD_INPUT: list[tuple[str, bytes, dict[str, Any], str]] = [
    ("invalid yaml", b"kind: [unclosed\n", {"name": "x"}, "invalid YAML"),
    ("yaml without a name", CONFIGMAP, {}, "needs a taskset name"),
    ("not kubernetes", b"just: data\n", {"name": "x"}, "apiVersion"),
    ("bad taskset name", CONFIGMAP, {"name": "Bad_Name"}, "invalid taskset name"),
    ("kustomize from a file", CONFIGMAP, {"name": "x", "format": "kustomize"}, "not a tar"),
    ("bad selector", CONFIGMAP, {"name": "x", "placement": {"selector": "=="}}, "selector"),
    ("negative batch", CONFIGMAP, {"name": "x", "rollout": {"batch_size": -1}}, "negative"),
    ("corrupt archive", b"\x1f\x8b\x08\x00garbage", {"name": "x"}, "not a readable tar"),
]


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [pytest.param(src, spec, m, id=name) for name, src, spec, m in BAD_INPUT],
)
async def test_bad_input_is_a_400_with_a_clear_message(
    event_store: EventStore, tmp_path: Path, source: bytes, spec: dict[str, Any], message: str
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(c, source, "source.yaml", **spec)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


async def test_malformed_publish_requests_are_400s(event_store: EventStore, tmp_path: Path) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        not_json = await c.post(
            "/api/v1/tasksets",
            data={"spec": "{not json"},
            files={"source": ("a.yaml", CONFIGMAP)},
        )
        wrong_type = await c.post(
            "/api/v1/tasksets",
            data={"spec": json.dumps({"name": 5})},
            files={"source": ("a.yaml", CONFIGMAP)},
        )
        no_file = await c.post("/api/v1/tasksets", data={"spec": "{}"})
        json_body = await c.post("/api/v1/tasksets", json={"spec": "{}"})
    assert not_json.status_code == 400
    assert "not JSON" in not_json.json()["error"]
    assert wrong_type.status_code == 400
    assert "$.name" in wrong_type.json()["error"]
    assert no_file.status_code == 400
    assert json_body.status_code == 400


async def test_retire_removes_a_published_taskset_once(
    event_store: EventStore, tmp_path: Path
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        await publish(c, CONFIGMAP, "settings.yaml", name="settings")
        retired = await c.post("/api/v1/tasksets/settings/retire", json={"reason": "replaced"})
        again = await c.post("/api/v1/tasksets/settings/retire")
        unknown = await c.post("/api/v1/tasksets/nothing/retire")
    assert retired.status_code == 200, retired.text
    assert retired.json()["version"] == 1
    assert again.status_code == 409
    assert "already retired" in again.json()["error"]
    assert unknown.status_code == 404
    assert "never published" in unknown.json()["error"]


OUTSIDE_KUSTOMIZATION = b"resources: [cm.yaml]\n"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        pytest.param("../outside", "points outside the upload", id="parent directory"),
        pytest.param(
            "https://github.com/example/repo//base?ref=v1",
            "resources[0] 'https://github.com/example/repo//base?ref=v1' is refused: it holds ':'",
            id="remote base",
        ),
    ],
)
async def test_a_kustomize_upload_may_not_reach_past_itself(
    event_store: EventStore, tmp_path: Path, reference: str, message: str
) -> None:
    # A kustomization on the hub's own disk, next to where uploads are unpacked.
    outside = Path(tempfile.gettempdir()) / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "kustomization.yaml").write_bytes(OUTSIDE_KUSTOMIZATION)
    (outside / "cm.yaml").write_bytes(CONFIGMAP)
    upload = tar_gz(
        [
            (
                "app/kustomization.yaml",
                f'resources: ["{reference}", "../{"../" * 3}tmp/outside"]\n'.encode(),
            )
        ]
    )
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        response = await publish(c, upload, "app.tar.gz", name="escape", format="kustomize")
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["context"]["entry"] == "app/kustomization.yaml"
    (refused,) = problem["errors"]
    assert refused["field"].startswith("resources[")
    assert refused["position"] == f"app/kustomization.yaml: {refused['field']}"
    assert refused["source"] == "upload"
    assert [s async for s in event_store.read()] == []
