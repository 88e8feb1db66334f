"""Standing sources through the whole loop: `fleetbus up --sim-clusters 1 --source-host
127.0.0.1` against a Helm HTTP repository, the distribution registry and Git served on
loopback. A new chart version or commit becomes a new taskset version on the simulated
cluster, with its provenance in `status`, `events`, `state` and the API; a broken new version
and an unreachable source leave the last good version running with `SourceFailed` on the log.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.eventually import eventually
from tests.security.live_hub import LiveHub
from tests.source_servers import (
    GitServer,
    HelmRepository,
    OciRegistry,
    git_server,
    helm_repository,
    make_chart,
    oci_registry,
    package_chart,
)

__all__ = ["git_server", "helm_repository", "oci_registry"]

BROKEN_TEMPLATE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LiveHub]:
    live = LiveHub(tmp_path / "hub", ("--sim-clusters", "1", "--source-host", "127.0.0.1"))
    live.start(timeout=120)
    try:
        yield live
    finally:
        live.stop()


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def cell(hub: LiveHub, taskset: str) -> dict[str, Any] | None:
    answer = hub.cli("status", taskset, "-o", "json", "--data-dir", str(hub.data_dir))
    if answer.returncode != 0 and b"has never been published" in answer.stderr:
        return None  # the source's first check is still fetching
    status = orjson.loads(ok(answer))
    cells = [c for c in status["status"] if c["cluster"] == "sim-1"]
    return cells[0] if cells else None


async def applied(hub: LiveHub, taskset: str, version: int, within: float = 60) -> None:
    def check() -> bool:
        row = cell(hub, taskset)
        return row is not None and row["applied_version"] == version and row["state"] == "applied"

    await eventually(check, f"{taskset} v{version} applied on sim-1", within, 0.3)


def events_text(hub: LiveHub, taskset: str) -> str:
    return ok(hub.cli("events", "--taskset", taskset, "--data-dir", str(hub.data_dir)))


async def test_new_chart_versions_reach_the_cluster_and_broken_or_unreachable_ones_keep_the_last(
    hub: LiveHub, helm_repository: HelmRepository, tmp_path: Path
) -> None:
    data = ("--data-dir", str(hub.data_dir))
    helm_repository.add(make_chart(tmp_path / "src", "web", "1.0.0"))
    out = ok(
        hub.cli(
            "source",
            "add",
            "web",
            "--repo",
            helm_repository.url,
            "--chart",
            "web",
            "--version",
            "^1.0",
            "--interval",
            "2s",
            "--cluster",
            "sim-1",
            *data,
        )
    )
    assert "added source web publishing taskset web" in out
    await applied(hub, "web", 1)

    helm_repository.add(make_chart(tmp_path / "src", "web", "1.1.0"))
    await applied(hub, "web", 2)
    status = ok(hub.cli("status", "web", *data))
    assert f"source of web v2: helm-repo {helm_repository.url} chart web 1.1.0 (sha256:" in status
    assert "chart web 1.1.0" in events_text(hub, "web")
    state = orjson.loads(ok(hub.cli("state", "--cluster", "sim-1", "-o", "json", *data)))
    (task,) = [t for t in state["tasks"] if t["clusterTask"]["tasksetName"] == "web"]
    assert task["provenance"]["chart_version"] == "1.1.0"
    assert task["provenance"]["source"] == "web"
    detail = hub.http("GET", "/api/v1/tasksets/web", token=hub.admin_token()).json()
    assert [v["provenance"]["chart_version"] for v in detail["versions"]] == ["1.1.0", "1.0.0"]
    assert detail["taskset"]["provenance"]["url"] == helm_repository.url

    # 2.0.0 is outside the constraint: nothing happens.
    helm_repository.add(make_chart(tmp_path / "src", "web", "2.0.0"))
    sync = ok(hub.cli("source", "sync", "web", *data))
    assert sync.startswith("unchanged: web v2")

    helm_repository.add(make_chart(tmp_path / "src", "web", "1.2.0", template=BROKEN_TEMPLATE))
    await eventually(
        lambda: "source web failed (render" in events_text(hub, "web"),
        "SourceFailed for the broken chart",
        30,
        0.5,
    )
    failed = hub.cli("source", "sync", "web", *data)
    assert failed.returncode == 1
    assert "does not render" in failed.stderr.decode()
    assert "v2 stays" in failed.stderr.decode()
    await applied(hub, "web", 2)

    helm_repository.stop()
    await eventually(
        lambda: "source web failed (fetch" in events_text(hub, "web"),
        "SourceFailed for the unreachable repository",
        30,
        0.5,
    )
    listing = ok(hub.cli("source", "ls", *data))
    assert "failing" in listing
    assert "cannot read the index" in listing
    row = cell(hub, "web")
    assert row is not None
    assert (row["applied_version"], row["desired_version"]) == (2, 2)


async def test_a_chart_from_the_oci_registry_is_published_with_its_manifest_digest(
    hub: LiveHub, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    data = ("--data-dir", str(hub.data_dir))
    oci_registry.push(package_chart(make_chart(tmp_path / "src", "api", "0.3.0"), tmp_path / "pkg"))
    out = ok(
        hub.cli(
            "publish",
            "--chart",
            f"oci://{oci_registry.host}/charts/api",
            "--version",
            "0.3.0",
            "--plain-http",
            "--cluster",
            "sim-1",
            *data,
        )
    )
    assert "published api v1" in out
    assert f"from oci oci://{oci_registry.host}/charts/api chart api 0.3.0 (sha256:" in out
    await applied(hub, "api", 1)
    again = ok(
        hub.cli(
            "publish",
            "--chart",
            f"oci://{oci_registry.host}/charts/api",
            "--version",
            "0.3.0",
            "--plain-http",
            "--cluster",
            "sim-1",
            *data,
        )
    )
    assert again.startswith("unchanged: api v1")

    # Bad input: a host off the allow-list, a tag inside the reference, a Git source without a
    # name. Each is one line naming the problem, exit 2, no traceback, nothing on the log.
    before = hub.last_sequences()
    for args, message in [
        (
            ("--chart", "oci://localhost:5000/charts/api", "--version", "1.0.0"),
            "on host localhost:5000, which this hub may not contact",
        ),
        (
            ("--chart", f"oci://{oci_registry.host}/charts/api:0.3.0", "--plain-http"),
            "give the chart version with --version",
        ),
        (("--git", "git://127.0.0.1/x.git"), "a Git source needs a taskset name"),
        (("--chart", "api", "--version", "1.0.0"), "needs --repo URL"),
    ]:
        refused = hub.cli("publish", *args, "--cluster", "sim-1", *data)
        error = refused.stderr.decode()
        assert refused.returncode == 2, error
        assert message in error
        assert "Traceback" not in error
        assert len(error.strip().splitlines()) == 1, error
    assert hub.last_sequences() == before


async def test_a_new_commit_of_a_git_overlay_reaches_the_cluster_with_its_sha(
    hub: LiveHub, git_server: GitServer
) -> None:
    data = ("--data-dir", str(hub.data_dir))
    base = {
        "base/kustomization.yaml": "resources: [cm.yaml]\n",
        "base/cm.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: '1'\n"
        ),
        "overlays/prod/kustomization.yaml": "resources: [../../base]\nnamePrefix: prod-\n",
    }
    first = git_server.create("platform", base)
    ok(
        hub.cli(
            "source",
            "add",
            "platform",
            "--git",
            git_server.git_url("platform"),
            "--ref",
            "main",
            "--path",
            "overlays/prod",
            "--interval",
            "2s",
            "--cluster",
            "sim-1",
            *data,
        )
    )
    await applied(hub, "platform", 1)
    assert f"({first[:12]})" in events_text(hub, "platform")
    second = git_server.commit(
        "platform", {"base/cm.yaml": base["base/cm.yaml"].replace("'1'", "'2'")}
    )
    await applied(hub, "platform", 2)
    status = ok(hub.cli("status", "platform", *data))
    assert f"overlays/prod @ {second[:12]}" in status

    # An overlay reaching outside its repository is refused; v2 stays.
    git_server.commit(
        "platform", {"overlays/prod/kustomization.yaml": "resources: [../../../../etc]\n"}
    )
    await eventually(
        lambda: "points outside the repository" in events_text(hub, "platform"),
        "SourceFailed for the escaping overlay, naming the rule",
        30,
        0.5,
    )
    assert "source platform failed (render" in events_text(hub, "platform")
    await applied(hub, "platform", 2)
