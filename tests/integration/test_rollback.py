"""`fleetbus rollback NAME --to-version N` against a real hub: snapshot N again, caused by N."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.auth import Role
from events.catalog import TasksetPublished
from events.store import EventStore
from fleetbus.cli import main
from taskset.codec import decode_taskset
from tests.conftest import HubNats
from tests.integration.api_harness import live_api


@pytest.fixture
async def data_dir(hub_nats: HubNats, event_store: EventStore) -> AsyncIterator[str]:
    async with live_api(event_store, hub_nats.data.root) as api:
        hub_nats.data.write_hub_info({"nats_url": hub_nats.url, "http_url": api.url})
        (hub_nats.data.root / "admin.token").write_text(api.tokens[Role.admin])
        yield str(hub_nats.data.root)


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def configmap(tmp_path: Path, value: str) -> Path:
    path = tmp_path / f"app-{value}.yaml"
    path.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  value: '{value}'\n"
    )
    return path


async def snapshots(store: EventStore, name: str) -> list[tuple[str, TasksetPublished]]:
    found = []
    async for stored in store.read(subject=f"fleet.evt.taskset.{name}"):
        if isinstance(stored.event, TasksetPublished):
            found.append((stored.event.id, stored.event))
    return found


async def test_rollback_publishes_version_ns_snapshot_as_the_next_version_caused_by_it(
    data_dir: str, event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for value in ("one", "two"):
        publish = ("publish", str(configmap(tmp_path, value)), "--name", "app", "-n", "shop")
        assert await cli(*publish, "--cluster", "edge-1", "--data-dir", data_dir) == 0
    capsys.readouterr()

    assert await cli("rollback", "app", "--to-version", "1", "--data-dir", data_dir) == 0

    assert "published as v3" in capsys.readouterr().out
    (first_id, first), _, (_, third) = await snapshots(event_store, "app")
    assert third.taskset_version == 3
    assert third.rollback_of == 1
    assert third.causation_id == first_id
    assert third.digest == first.digest
    assert decode_taskset(third.body).install[0].object["data"] == {"value": "one"}
    assert third.placement.clusters == ["edge-1"]

    assert await cli("rollback", "app", "--to-version", "1", "--data-dir", data_dir) == 0
    assert "unchanged" in capsys.readouterr().out
    assert len(await snapshots(event_store, "app")) == 3


async def test_rollback_to_a_version_that_never_was_is_refused_naming_the_versions(
    data_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publish = ("publish", str(configmap(tmp_path, "one")), "--name", "app", "-n", "shop")
    assert await cli(*publish, "--data-dir", data_dir) == 0
    capsys.readouterr()

    assert await cli("rollback", "app", "--to-version", "7", "--data-dir", data_dir) != 0
    err = capsys.readouterr().err
    assert "taskset app has no version 7; its versions are 1 to 1" in err
    assert "Traceback" not in err
    assert await cli("rollback", "nothing", "--to-version", "1", "--data-dir", data_dir) != 0
    assert "never published" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rollback", "app", "--to-version", "0", "--data-dir", data_dir])


async def test_publish_settings_over_the_api_are_checked_and_kept_with_the_snapshot(
    event_store: EventStore, tmp_path: Path
) -> None:
    import json

    from tests.integration.test_api_tasksets import CONFIGMAP, publish, tar_gz

    spec_file = b"driftPolicy: report\nignorePaths: [/data/colour]\n"
    upload = tar_gz([("src/settings.yaml", CONFIGMAP), ("src/fleetbus.yaml", spec_file)])
    async with live_api(event_store, tmp_path / "hub") as api, api.client(Role.publisher) as c:
        bad = await publish(
            c, CONFIGMAP, "settings.yaml", name="settings", settings={"driftPolicy": "fix"}
        )
        assert bad.status_code in (400, 422), bad.text
        assert "spec.settings: driftPolicy: 'fix' is not a drift policy" in bad.text
        assert await event_store.subject_version("fleet.evt.taskset.settings") == 0

        good = await publish(
            c, upload, "src.tar.gz", name="settings", namespace="web", settings={"adopt": True}
        )
        assert good.status_code == 201, good.text
    [(_, event)] = await snapshots(event_store, "settings")
    taskset = decode_taskset(event.body)
    assert taskset.drift_policy == "report"
    assert taskset.ignore_paths == ["/data/colour"]
    assert taskset.adopt is True
    assert [s.ref.kind for s in taskset.install] == ["ConfigMap"], json.dumps(taskset.settings)
