"""Cluster registry, overrides and rollout resume as services over a real log, and their CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml

from access.nats_accounts import NatsAuthority
from access.pki import HubPki, cluster_of_certificate
from api.auth import Role
from events.catalog import RolloutHalted, RolloutResumed
from events.store import EventStore
from fleetbus.bundle import read_edge_bundle
from fleetbus.cli import main
from fleetbus.enrollment import BundleEnrollment
from registry.clusters import (
    change_cluster_labels,
    deregister_cluster,
    list_clusters,
    register_cluster,
)
from registry.errors import (
    ClusterAlreadyRegistered,
    ClusterNotFound,
    InvalidCommand,
    OverrideNotFound,
    OverrideRefused,
    RolloutNotHalted,
)
from registry.overrides import (
    SetOverride,
    list_overrides,
    preview_overrides,
    remove_override,
    set_override,
)
from registry.rollouts import resume_rollout
from tests.conftest import HubNats
from tests.integration.api_harness import live_api
from tests.integration.scheduler_harness import FakeChartRenderer
from tests.scheduler_fixtures import config_map, deployment, envelope, make_taskset, published

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_clusters_register_relabel_and_deregister(event_store: EventStore) -> None:
    await register_cluster(event_store, "edge-1", {"env": "prod"}, actor="user:a", now=NOW)
    with pytest.raises(ClusterAlreadyRegistered, match="already registered"):
        await register_cluster(event_store, "edge-1", {}, actor="user:a", now=NOW)
    with pytest.raises(InvalidCommand, match="invalid label key"):
        await register_cluster(event_store, "edge-2", {"bad key": "x"}, actor="user:a", now=NOW)
    record = await change_cluster_labels(
        event_store, "edge-1", {"tier": "web"}, ["env"], actor="user:a", now=NOW
    )
    assert record.labels == {"tier": "web"}
    await deregister_cluster(event_store, "edge-1", actor="user:a", now=NOW)
    with pytest.raises(ClusterNotFound):
        await deregister_cluster(event_store, "edge-1", actor="user:a", now=NOW)
    assert await list_clusters(event_store) == []
    again = await register_cluster(event_store, "edge-1", {"env": "dev"}, actor="user:b", now=NOW)
    assert again.labels == {"env": "dev"}
    assert [r.name for r in await list_clusters(event_store)] == ["edge-1"]


async def test_overrides_are_checked_against_the_snapshot_and_previewed(
    event_store: EventStore,
) -> None:
    await register_cluster(event_store, "edge-1", {"env": "prod"}, actor="user:a", now=NOW)
    plain = make_taskset("web", deployment("web"), config_map("settings"))
    await event_store.append([published(plain, 1, selector="env")])

    def command(**fields: object) -> SetOverride:
        base: dict[str, object] = {"taskset": "web", "name": "o", "actor": "user:a"}
        base.update(fields)
        return SetOverride(**base)  # type: ignore[arg-type]

    with pytest.raises(OverrideRefused, match="Deployment/ghost, which taskset web v1"):
        await set_override(
            event_store,
            command(
                cluster="edge-1",
                patches=[{"target": {"kind": "Deployment", "name": "ghost"}, "mergePatch": {}}],
            ),
            NOW,
        )
    with pytest.raises(OverrideRefused, match="not a Helm chart"):
        await set_override(event_store, command(cluster="edge-1", values={"a": 1}), NOW)
    with pytest.raises(ClusterNotFound, match="edge-9"):
        await set_override(event_store, command(cluster="edge-9", values={"a": 1}), NOW)
    with pytest.raises(OverrideRefused, match="position"):
        await set_override(event_store, command(selector="env in prod", values={"a": 1}), NOW)
    with pytest.raises(OverrideRefused, match="test failed"):
        await set_override(
            event_store,
            command(
                cluster="edge-1",
                patches=[
                    {
                        "target": {"kind": "Deployment", "name": "web"},
                        "jsonPatch": [{"op": "test", "path": "/spec/replicas", "value": 9}],
                    }
                ],
            ),
            NOW,
        )
    await set_override(
        event_store,
        command(
            name="prod",
            selector="env=prod",
            patches=[
                {
                    "target": {"kind": "Deployment", "name": "web"},
                    "mergePatch": {"spec": {"replicas": 3}},
                }
            ],
        ),
        NOW,
    )
    await set_override(
        event_store,
        command(
            name="edge-1-only",
            cluster="edge-1",
            patches=[
                {
                    "target": {"kind": "Deployment", "name": "web", "namespace": "apps"},
                    "jsonPatch": [{"op": "replace", "path": "/spec/replicas", "value": 5}],
                }
            ],
        ),
        NOW,
    )
    assert [o.name for o in await list_overrides(event_store, "web")] == ["prod", "edge-1-only"]
    preview = await preview_overrides(event_store, "web", "edge-1")
    assert preview.overrides == ["prod", "edge-1-only"]
    assert "-  replicas: 1\n+  replicas: 5\n" in preview.diff
    assert "settings" not in preview.diff
    await remove_override(event_store, "web", "edge-1-only", actor="user:a", now=NOW)
    with pytest.raises(OverrideNotFound):
        await remove_override(event_store, "web", "edge-1-only", actor="user:a", now=NOW)
    preview = await preview_overrides(event_store, "web", "edge-1")
    assert "+  replicas: 3\n" in preview.diff


async def test_values_overrides_preview_by_rerendering_the_chart(event_store: EventStore) -> None:
    await register_cluster(event_store, "edge-1", {"env": "prod"}, actor="user:a", now=NOW)
    helm = make_taskset("web", helm=True)
    await event_store.append([published(helm, 1, clusters=["edge-1"], values={"replicas": 1})])
    await set_override(
        event_store,
        SetOverride(
            taskset="web", name="big", cluster="edge-1", values={"replicas": 4}, actor="user:a"
        ),
        NOW,
    )
    preview = await preview_overrides(event_store, "web", "edge-1", FakeChartRenderer())
    assert "+  replicas: 4\n" in preview.diff


async def test_only_a_halted_rollout_of_the_latest_version_can_be_resumed(
    event_store: EventStore,
) -> None:
    await event_store.append([published(make_taskset("web"), 1, clusters=[])])
    with pytest.raises(RolloutNotHalted):
        await resume_rollout(event_store, "web", actor="user:a", now=NOW)
    await event_store.append(
        [
            RolloutHalted(
                **envelope("scheduler"), taskset="web", taskset_version=1, wave=0, failed=["a"]
            )
        ]
    )
    resumed = await resume_rollout(event_store, "web", actor="user:a", now=NOW)
    assert isinstance(resumed, RolloutResumed)
    assert resumed.taskset_version == 1
    with pytest.raises(RolloutNotHalted):
        await resume_rollout(event_store, "web", actor="user:a", now=NOW)


@pytest.fixture
async def served(
    hub_nats: HubNats, event_store: EventStore, tmp_path: Path
) -> AsyncIterator[list[str]]:
    """`--data-dir` of a hub whose API the CLI finds by `hub.json` and `admin.token`: with its
    projector (for `cluster ls`) and a CA to enroll clusters with (as under `fleetbus up`)."""
    pki = HubPki(tmp_path / "pki")
    pki.ensure_ca(datetime.now(UTC))
    async with live_api(event_store, hub_nats.data.root, projector=True) as api:
        api.hub.enrollment = BundleEnrollment(
            pki=pki,
            hub_urls=["tls://hub.example:443"],
            authority=NatsAuthority.open(tmp_path),
        )
        hub_nats.data.write_hub_info({"nats_url": hub_nats.url, "http_url": api.url})
        (hub_nats.data.root / "admin.token").write_text(api.tokens[Role.admin])
        yield ["--data-dir", str(hub_nats.data.root)]


async def cli(*argv: str) -> int:
    """Run the CLI as a user would: its own event loop, in its own thread."""
    return await asyncio.to_thread(main, list(argv))


async def test_the_cli_registers_lists_labels_and_removes_clusters(
    served: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = served
    # `--out` (the edge bundle written to a directory): see tests/integration/test_edge_cli.py.
    assert await cli("cluster", "register", "edge-1", "--label", "env=prod", *data) == 0
    assert await cli("cluster", "register", "edge-1", *data) == 2
    assert "already registered" in capsys.readouterr().err
    assert await cli("cluster", "label", "edge-1", "tier=web", "env-", *data) == 0
    capsys.readouterr()
    assert await cli("cluster", "ls", "-o", "json", *data) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [(c["name"], c["labels"]) for c in listed] == [("edge-1", {"tier": "web"})]
    assert await cli("cluster", "rm", "edge-1", *data) == 0
    assert await cli("cluster", "rm", "edge-1", *data) == 2


async def test_the_cli_lists_deregistered_clusters_only_when_asked(
    served: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = served
    assert await cli("cluster", "register", "edge-1", *data) == 0
    assert await cli("cluster", "register", "edge-2", "--label", "env=dev", *data) == 0
    assert await cli("cluster", "rm", "edge-1", *data) == 0
    capsys.readouterr()
    assert await cli("cluster", "ls", *data) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "STATE", "REGISTERED", "LABELS"]
    assert [row.split()[:2] for row in table[1:]] == [["edge-2", "registered"]]
    assert table[1].split()[3] == "env=dev"
    assert await cli("cluster", "ls", "--all", *data) == 0
    rows = [row.split()[:2] for row in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [["edge-1", "deregistered"], ["edge-2", "registered"]]


async def test_the_cli_sets_previews_and_removes_an_override(
    served: list[str], event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = served
    assert await cli("cluster", "register", "edge-1", "--label", "env=prod", *data) == 0
    await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])
    patch = tmp_path / "patch.yaml"
    patch.write_text(
        yaml.safe_dump(
            {
                "target": {"kind": "Deployment", "name": "web"},
                "mergePatch": {"spec": {"replicas": 2}},
            }
        )
    )
    assert (
        await cli(
            "override",
            "set",
            "web",
            "--name",
            "two",
            "--selector",
            "env=prod",
            "--patch",
            str(patch),
            *data,
        )
        == 0
    )
    capsys.readouterr()
    assert await cli("override", "preview", "web", "--cluster", "edge-1", *data) == 0
    shown = capsys.readouterr()
    assert "+  replicas: 2" in shown.out
    assert "overrides: two" in shown.err
    values = tmp_path / "values.yaml"
    values.write_text("replicas: 3\n")
    assert (
        await cli(
            "override",
            "set",
            "web",
            "--name",
            "v",
            "--cluster",
            "edge-1",
            "--values",
            str(values),
            *data,
        )
        == 2
    )
    assert "not a Helm chart" in capsys.readouterr().err
    assert await cli("override", "rm", "web", "--name", "two", *data) == 0


async def test_register_into_a_directory_of_other_files_is_refused_and_registers_nothing(
    served: list[str], event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    last = await event_store.last_sequence()
    assert await cli("cluster", "register", "edge-1", "--out", str(home), *served) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "not empty" in error
    assert await event_store.last_sequence() == last
    assert [p.name for p in home.iterdir()] == ["notes.txt"]


async def test_registering_again_after_rm_renews_the_bundle_in_its_directory(
    served: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "edge-1"
    assert await cli("cluster", "register", "edge-1", "--out", str(out), *served) == 0
    assert f"bundle written to {out}" in capsys.readouterr().out
    first = read_edge_bundle(out).cert_file.read_bytes()
    assert await cli("cluster", "register", "edge-2", "--out", str(out), *served) == 2
    assert "bundle of cluster edge-1" in capsys.readouterr().err
    assert await cli("cluster", "rm", "edge-1", *served) == 0
    assert await cli("cluster", "register", "edge-1", "--out", str(out), *served) == 0
    renewed = read_edge_bundle(out)
    assert renewed.cert_file.read_bytes() != first
    assert cluster_of_certificate(renewed.cert_file.read_bytes()) == "edge-1"


async def test_the_cli_lists_overrides_in_the_order_they_apply(
    served: list[str], event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("cluster", "register", "edge-1", "--label", "env=prod", *served) == 0
    await event_store.append([published(make_taskset("web"), 1, selector="env=prod")])
    patch = tmp_path / "patch.yaml"
    patch.write_text(
        yaml.safe_dump(
            [{"target": {"kind": "Deployment", "name": "web"}, "mergePatch": {"spec": {}}}]
        )
    )
    for name, where in (("mine", ("--cluster", "edge-1")), ("prod", ("--selector", "env=prod"))):
        code = await cli(
            "override", "set", "web", "--name", name, *where, "--patch", str(patch), *served
        )
        assert code == 0
    capsys.readouterr()
    assert await cli("override", "ls", "web", "-o", "json", *served) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert [(r["name"], r["cluster"], r["selector"], r["kind"]) for r in rows] == [
        ("prod", "", "env=prod", "patch"),
        ("mine", "edge-1", "", "patch"),
    ]
    assert all(datetime.fromisoformat(r["set_at"]).tzinfo is not None for r in rows)
    assert {r["actor"] for r in rows} == {"user:test-admin"}, "the token's name"
    assert await cli("override", "ls", "web", *served) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "KIND", "TARGET", "ACTOR"]
    assert [line.split()[:4] for line in table[1:]] == [
        ["prod", "patch", "selector", "env=prod"],
        ["mine", "patch", "cluster", "edge-1"],
    ]
