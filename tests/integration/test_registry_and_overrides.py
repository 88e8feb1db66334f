"""Cluster registry, overrides and rollout resume as services over a real log, and their CLI."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml

from api.clusters import (
    ClusterAlreadyRegistered,
    ClusterNotFound,
    change_cluster_labels,
    deregister_cluster,
    list_clusters,
    register_cluster,
)
from api.errors import InvalidRequest
from api.overrides import (
    OverrideNotFound,
    OverrideRefused,
    SetOverride,
    list_overrides,
    preview_overrides,
    remove_override,
    set_override,
)
from api.rollouts import RolloutNotHalted, resume_rollout
from events.catalog import Event, RolloutHalted, RolloutResumed
from events.store import EventStore, connect
from events.streams import hub_streams
from fleetbus.cli import main
from tests.conftest import HubNats
from tests.integration.scheduler_harness import FakeChartRenderer
from tests.scheduler_fixtures import config_map, deployment, envelope, make_taskset, published

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_clusters_register_relabel_and_deregister(event_store: EventStore) -> None:
    await register_cluster(event_store, "edge-1", {"env": "prod"}, actor="user:a", now=NOW)
    with pytest.raises(ClusterAlreadyRegistered, match="already registered"):
        await register_cluster(event_store, "edge-1", {}, actor="user:a", now=NOW)
    with pytest.raises(InvalidRequest, match="invalid label key"):
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


def prepare_hub(hub: HubNats, *events: Event) -> None:
    """Streams in place, `hub.json` written (as `fleetbus up` does), and `events` appended."""
    hub.data.write_hub_info({"nats_url": hub.url})

    async def setup() -> None:
        nc = await connect(hub.url, user="hub", password=hub.password)
        store = EventStore(nc)
        await store.ensure_streams(hub_streams())
        if events:
            await store.append(list(events))
        await store.close()

    asyncio.run(setup())


def test_the_cli_registers_lists_labels_and_removes_clusters(
    hub_nats: HubNats, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_hub(hub_nats)
    data = ["--data-dir", str(hub_nats.data.root)]
    # `--out` (certificate and edge bundle) needs a hub with its leafnode listener: see
    # tests/integration/test_edge_cli.py.
    assert main(["cluster", "register", "edge-1", "--label", "env=prod", *data]) == 0
    assert main(["cluster", "register", "edge-1", *data]) == 2
    assert "already registered" in capsys.readouterr().err
    assert main(["cluster", "label", "edge-1", "tier=web", "env-", *data]) == 0
    capsys.readouterr()
    assert main(["cluster", "ls", "-o", "json", *data]) == 0
    listed = orjson.loads(capsys.readouterr().out)
    assert [(c["name"], c["labels"]) for c in listed] == [("edge-1", {"tier": "web"})]
    assert main(["cluster", "rm", "edge-1", *data]) == 0
    assert main(["cluster", "rm", "edge-1", *data]) == 2


def test_the_cli_sets_previews_and_removes_an_override(
    hub_nats: HubNats, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_hub(hub_nats)
    data = ["--data-dir", str(hub_nats.data.root)]
    assert main(["cluster", "register", "edge-1", "--label", "env=prod", *data]) == 0
    prepare_hub(hub_nats, published(make_taskset("web"), 1, selector="env=prod"))
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
        main(
            [
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
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["override", "preview", "web", "--cluster", "edge-1", *data]) == 0
    shown = capsys.readouterr()
    assert "+  replicas: 2" in shown.out
    assert "overrides: two" in shown.err
    values = tmp_path / "values.yaml"
    values.write_text("replicas: 3\n")
    assert (
        main(
            [
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
            ]
        )
        == 2
    )
    assert "not a Helm chart" in capsys.readouterr().err
    assert main(["override", "rm", "web", "--name", "two", *data]) == 0
