"""`fleetbus publish` and `retire` against a real hub nats-server: snapshots on the log, charts
kept by content, "unchanged" for identical content, and nothing written for bad input."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.auth import Role
from charts.errors import ChartArchiveMissing
from charts.store import ChartStore, chart_address
from events.catalog import TasksetPublished, TasksetRetired
from events.errors import ConcurrencyConflict, EventLogUnavailable
from events.store import EventStore, StoredEvent, connect
from fleetbus.cli import main
from normalizer import NormalizeOptions, normalize
from normalizer.helm import render_chart_archive
from registry.tasksets import (
    PublishTaskset,
    TasksetHistory,
    decide_publish,
    load_history,
    publish_taskset,
)
from sealing.envelope import is_sealed_text, open_value
from sealing.trees import open_taskset
from taskset.codec import decode_taskset
from tests.conftest import HubNats
from tests.integration.api_harness import live_api
from tests.integration.bad_sources import CASE_IDS, HOOKS_CHART, bad_sources

DATA = Path(__file__).parent.parent / "data"
BUNDLE = DATA / "yaml" / "bundle"
OVERLAY = DATA / "kustomize" / "overlay"


@pytest.fixture
async def data_dir(hub_nats: HubNats, event_store: EventStore) -> AsyncIterator[str]:
    """A data dir whose hub.json and admin.token point the CLI at the test's hub API."""
    async with live_api(event_store, hub_nats.data.root) as api:
        hub_nats.data.write_hub_info({"nats_url": hub_nats.url, "http_url": api.url})
        (hub_nats.data.root / "admin.token").write_text(api.tokens[Role.admin])
        yield str(hub_nats.data.root)


async def cli(*argv: str) -> int:
    """Run the CLI as a user would: its own event loop, in its own thread."""
    return await asyncio.to_thread(main, list(argv))


async def taskset_events(store: EventStore, name: str) -> list[StoredEvent]:
    if await store.subject_version(f"fleet.evt.taskset.{name}") == 0:
        return []
    return [s async for s in store.read(subject=f"fleet.evt.taskset.{name}")]


async def test_publish_appends_a_snapshot_that_fleetbus_events_shows(
    data_dir: str, event_store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli(
        "publish", str(BUNDLE), "--name", "shop", "--namespace", "shop",
        "--selector", "env=prod", "--cluster", "edge-1", "--batch-size", "2",
        "--pause", "30", "--failure-threshold", "1", "--data-dir", data_dir,
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert re.match(r"published shop v1 \(sha256:[0-9a-f]{64}, [\d,]+ bytes compressed\)", out)
    [stored] = await taskset_events(event_store, "shop")
    event = stored.event
    assert isinstance(event, TasksetPublished)
    assert (event.taskset, event.taskset_version, event.format) == ("shop", 1, "yaml")
    assert event.placement.selector == "env=prod"
    assert event.placement.clusters == ["edge-1"]
    assert (event.rollout.batch_size, event.rollout.pause_seconds) == (2, 30.0)
    assert event.rollout.failure_threshold == 1
    expected = normalize(BUNDLE, NormalizeOptions(name="shop", namespace="shop")).taskset
    assert decode_taskset(event.body) == expected


async def test_fleetbus_events_shows_the_published_version(
    data_dir: str, event_store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("publish", str(BUNDLE), "--name", "shop", "--data-dir", data_dir) == 0
    assert await cli("publish", str(OVERLAY), "--name", "shop", "--data-dir", data_dir) == 0
    capsys.readouterr()
    async with live_api(event_store, Path(data_dir)) as api:
        token = api.tokens[Role.viewer]
        assert await cli("events", "--server", api.url, "--token", token) == 0
    listing = capsys.readouterr().out
    assert re.search(r"TasksetPublished .*shop v1 \(yaml, sha256:", listing), listing
    assert re.search(r"TasksetPublished .*shop v2 \(kustomize, sha256:", listing), listing


async def test_publishing_identical_content_again_adds_nothing(
    data_dir: str, event_store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("publish", str(OVERLAY), "--name", "shop", "--data-dir", data_dir)
    assert await cli(*args) == 0
    capsys.readouterr()
    last = await event_store.last_sequence()
    assert await cli(*args) == 0
    assert capsys.readouterr().out.startswith("unchanged: shop v1 (sha256:")
    assert await event_store.last_sequence() == last
    assert len(await taskset_events(event_store, "shop")) == 1


async def test_new_content_or_placement_publishes_the_next_version(
    data_dir: str, event_store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("publish", str(OVERLAY), "--name", "shop", "--data-dir", data_dir) == 0
    assert await cli("publish", str(BUNDLE), "--name", "shop", "--data-dir", data_dir) == 0
    assert (
        await cli(
            "publish", str(BUNDLE), "--name", "shop", "--cluster", "edge-2", "--data-dir", data_dir
        )
        == 0
    )
    events = [s.event for s in await taskset_events(event_store, "shop")]
    assert [e.taskset_version for e in events if isinstance(e, TasksetPublished)] == [1, 2, 3]
    assert isinstance(events[1], TasksetPublished)
    assert isinstance(events[2], TasksetPublished)
    assert events[1].digest == events[2].digest
    assert "published shop v3" in capsys.readouterr().out


async def test_a_helm_chart_is_kept_on_the_hub_and_re_renders_to_the_snapshot(
    data_dir: str, event_store: EventStore, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("replicas: 3\n")
    assert await cli(
        "publish", str(HOOKS_CHART), "--name", "hooks", "-n", "team",
        "--values", str(values), "--data-dir", data_dir,
    ) == 0  # fmt: skip
    [stored] = await taskset_events(event_store, "hooks")
    event = stored.event
    assert isinstance(event, TasksetPublished)
    assert event.format == "helm"
    assert event.values == {"replicas": 3}
    assert event.chart_archive.startswith("sha256:")
    archive = await ChartStore.beside(event_store).get(event.chart_archive)
    assert chart_address(archive) == event.chart_archive
    assert event_store.sealer is not None, "the hub seals what it stores"
    snapshot = open_taskset(event_store.sealer.keys, decode_taskset(event.body))
    assert render_chart_archive(archive, event.values, "hooks", "team") == snapshot
    assert snapshot.source is not None
    assert snapshot.source.chart_archive == event.chart_archive


async def test_the_chart_store_keeps_one_copy_per_content_and_names_what_is_missing(
    event_store: EventStore,
) -> None:
    charts = ChartStore.beside(event_store)
    await charts.ensure()
    assert (await event_store.stream_info("OBJ_CHARTS"))["state"]["messages"] == 0
    archive = os.urandom(300_000)
    address = await charts.put(archive)
    assert await charts.put(archive) == address
    assert await charts.get(address) == archive
    assert await charts.contains(address)
    bucket = await event_store.stream_info("OBJ_CHARTS")
    assert bucket["state"]["messages"] == 4  # three chunks and one meta record, stored once
    missing = chart_address(b"never stored")
    assert not await charts.contains(missing)
    with pytest.raises(ChartArchiveMissing, match="no such archive"):
        await charts.get(missing)
    with pytest.raises(ChartArchiveMissing, match="not a chart archive address"):
        await charts.get("latest")


async def test_retire_appends_taskset_retired_once(
    data_dir: str, event_store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("publish", str(BUNDLE), "--name", "shop", "--data-dir", data_dir) == 0
    assert await cli("retire", "shop", "--reason", "moved", "--data-dir", data_dir) == 0
    assert "retired shop (last version v1)" in capsys.readouterr().out
    assert await cli("retire", "shop", "--data-dir", data_dir) == 2
    err = capsys.readouterr().err
    assert err == "fleetbus: error: taskset shop is already retired\n"
    events = [s.event for s in await taskset_events(event_store, "shop")]
    assert [type(e) for e in events] == [TasksetPublished, TasksetRetired]
    assert await cli("publish", str(BUNDLE), "--name", "shop", "--data-dir", data_dir) == 0
    history, _ = await load_history(event_store, "shop")
    assert (history.version, history.retired) == (2, False)


async def test_retiring_an_unknown_taskset_is_an_error_and_writes_nothing(
    data_dir: str, event_store: EventStore, capsys: pytest.CaptureFixture[str]
) -> None:
    before = await event_store.last_sequence()
    assert await cli("retire", "nothing", "--data-dir", data_dir) == 2
    assert capsys.readouterr().err == "fleetbus: error: taskset nothing was never published\n"
    assert await event_store.last_sequence() == before


async def test_a_publish_decided_on_a_stale_version_is_refused(event_store: EventStore) -> None:
    source = normalize(BUNDLE, NormalizeOptions(name="shop"))
    charts = ChartStore.beside(event_store)
    now = datetime.now(UTC)
    await publish_taskset(event_store, charts, source, actor="user:a", now=now)
    _, stale = await load_history(event_store, "shop")
    changed = normalize(OVERLAY, NormalizeOptions(name="shop"))
    await publish_taskset(event_store, charts, changed, actor="user:b", now=now)
    late = decide_publish(
        TasksetHistory(name="shop", version=1),
        PublishTaskset(
            taskset=source.taskset, actor="user:c", event_id="0190f5a0-0000-7000-8000-0000000000cc"
        ),
        now,
    )
    with pytest.raises(ConcurrencyConflict):
        await event_store.append(late, expected=stale)
    assert len(await taskset_events(event_store, "shop")) == 2


async def test_an_oversized_taskset_is_refused_naming_size_and_limit(
    data_dir: str, event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.yaml"
    noise = os.urandom(6 * 1024 * 1024).hex()
    big.write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: {noise}\n"
    )
    before = await event_store.last_sequence()
    assert await cli("publish", str(big), "--name", "big", "--data-dir", data_dir) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"fleetbus: error: taskset big is [\d,]+ bytes compressed \([\d,]+ bytes as an event\), "
        r"over the limit of 8,388,608 bytes \(8 MiB\) for one snapshot; split it into several "
        r"tasksets\n",
        err,
    ), err
    assert await event_store.last_sequence() == before


@pytest.mark.parametrize("case", CASE_IDS)
async def test_bad_input_publishes_nothing(
    case: str,
    data_dir: str,
    event_store: EventStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, extra, expected = bad_sources(tmp_path)[case]
    before = await event_store.last_sequence()
    code = await cli("publish", str(path), "--name", "bad-input", *extra, "--data-dir", data_dir)
    assert code == 2
    captured = capsys.readouterr()
    assert re.search(expected, captured.err), captured.err
    assert len(captured.err.splitlines()) == 1
    assert "Traceback" not in captured.err
    assert await event_store.last_sequence() == before


async def test_no_nats_error_leaves_the_chart_store(hub_nats: HubNats) -> None:
    nc = await connect(hub_nats.url, credentials=hub_nats.credentials)
    charts = ChartStore(nc, attempts=2, timeout=1.0)
    await nc.close()
    with pytest.raises(EventLogUnavailable, match="cannot store chart archive sha256:"):
        await charts.put(b"chart bytes")
    with pytest.raises(EventLogUnavailable, match="cannot read chart archive sha256:"):
        await charts.get(chart_address(b"chart bytes"))


GENERATED_CHART = DATA / "charts" / "generated"


async def test_a_chart_generating_a_password_publishes_unchanged_and_keeps_it(
    data_dir: str, event_store: EventStore, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ("publish", str(GENERATED_CHART), "--name", "auth", "--data-dir", data_dir)
    assert await cli(*args) == 0
    assert await cli(*args) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("unchanged: auth v1 (sha256:")
    values = tmp_path / "values.yaml"
    values.write_text("extra: 1\n")
    assert await cli(*args, "--values", str(values)) == 0
    events = [s.event for s in await taskset_events(event_store, "auth")]
    first, second = [e for e in events if isinstance(e, TasksetPublished)]
    assert second.taskset_version == 2

    keys = event_store.sealer.keys if event_store.sealer is not None else None
    assert keys is not None, "the hub seals what it stores"

    def password(event: TasksetPublished) -> str:
        [secret] = [
            s.object for _, s in decode_taskset(event.body).steps() if s.ref.kind == "Secret"
        ]
        stored = secret["stringData"]["password"]
        assert is_sealed_text(stored), "a Secret's value is sealed in the log"
        value: str = open_value(keys, stored)
        return value

    assert password(second) == password(first)
