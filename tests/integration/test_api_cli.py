"""The CLI over the HTTP API: finding the hub, tokens, events, status, state and publish --wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from api.auth import Role
from events.catalog import RolloutAdvanced, RolloutHalted, TasksetPublished
from events.ids import new_event_id
from events.store import EventStore
from fleetbus.cli import main
from fleetbus.enrollment import LogStateHistory
from fleetbus.rollout_wait import Progress, bar, progress_of
from tests.integration.api_harness import LiveApi, live_api, projected
from tests.integration.test_api_events import NOW, append_each, applied, registered, reports_store
from tests.integration.test_api_fleet import scheduled


async def cli(*argv: str) -> int:
    """Run the CLI as a user would: its own event loop, in its own thread."""
    return await asyncio.to_thread(main, list(argv))


def as_local_hub(api: LiveApi, data_dir: Path) -> list[str]:
    """Write what `fleetbus up` writes for the CLI to find the hub; the flag to pass."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "hub.json").write_text(json.dumps({"http_url": api.url}))
    (data_dir / "admin.token").write_text(api.tokens[Role.admin] + "\n")
    return ["--data-dir", str(data_dir)]


async def test_token_create_prints_the_token_last_and_it_works(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api:
        local = as_local_hub(api, tmp_path / "local")
        assert await cli("token", "create", "--role", "publisher", "--name", "ci", *local) == 0
        token = capsys.readouterr().out.splitlines()[-1]
        principal = await api.hub.tokens.authenticate(token, now=datetime.now(UTC))
        assert principal is not None
        assert (principal.name, principal.role) == ("ci", Role.publisher)
        assert await cli("token", "ls", *local) == 0
        listing = capsys.readouterr().out
        assert "ci" in listing
        assert token not in listing
        assert await cli("token", "revoke", "ci", *local) == 0
        assert await api.hub.tokens.authenticate(token, now=datetime.now(UTC)) is None
        viewer = ["--server", api.url, "--token", api.tokens[Role.viewer]]
        assert await cli("token", "ls", *viewer) == 2
        assert "needs the admin role" in capsys.readouterr().err


async def test_token_rotate_prints_the_new_secret_and_the_old_one_lasts_the_grace_only(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with live_api(event_store, tmp_path / "hub") as api:
        local = as_local_hub(api, tmp_path / "local")
        argv = ["token", "create", "--role", "viewer", "--name", "dash", "--expires-in", "2h"]
        assert await cli(*argv, *local) == 0
        old = capsys.readouterr().out.splitlines()[-1]
        record = next(r for r in await api.hub.tokens.list() if r.name == "dash")
        assert record.expires_at is not None
        lifetime = record.expires_at - record.created_at
        assert lifetime == timedelta(hours=2)
        assert await cli("token", "rotate", "dash", "--grace", "0", *local) == 0
        printed = capsys.readouterr().out.splitlines()
        new = printed[-1]
        assert "rotated viewer token dash" in printed[0]
        now = datetime.now(UTC)
        assert await api.hub.tokens.authenticate(new, now=now) is not None
        assert await api.hub.tokens.authenticate(old, now=now) is None
        assert await cli("token", "ls", *local) == 0
        assert "EXPIRES" in capsys.readouterr().out


async def test_events_finds_the_hub_by_flag_environment_or_data_dir(
    event_store: EventStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await append_each(event_store, [registered("east"), registered("west")])
    async with live_api(event_store, tmp_path / "hub") as api:
        local = as_local_hub(api, tmp_path / "local")
        assert await cli("events", "-o", "json", *local) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [row["event"]["cluster"] for row in rows] == ["east", "west"]
        flags = ["--server", api.url, "--token", api.tokens[Role.viewer]]
        assert await cli("events", "--cluster", "west", *flags) == 0
        table = capsys.readouterr().out.splitlines()
        assert len(table) == 2
        assert "west registered" in table[1]
        assert await cli("events", "--data-dir", str(tmp_path / "nothing-here")) == 2
        assert "no running hub found" in capsys.readouterr().err
        monkeypatch.setenv("FLEETBUS_SERVER", api.url)
        monkeypatch.setenv("FLEETBUS_TOKEN", "fbt_000000000000_wrong")
        assert await cli("events") == 2
        assert "bearer token is not valid" in capsys.readouterr().err


async def test_status_state_and_resume_read_the_hub(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await append_each(event_store, [registered("east")])
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        api.hub.history = LogStateHistory(event_store)
        await projected(api)
        local = as_local_hub(api, tmp_path / "local")
        assert await cli("status", "-o", "json", *local) == 0
        assert json.loads(capsys.readouterr().out) == {"status": [], "rollouts": []}
        assert await cli("state", "--cluster", "east", "-o", "json", *local) == 0
        assert json.loads(capsys.readouterr().out)["registered"] is True
        assert await cli("rollout", "resume", "web", *local) == 2
        assert "is not halted" in capsys.readouterr().err


async def test_snapshot_take_and_ls_through_the_hub_and_state_reads_from_them(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await reports_store(event_store)
    async with live_api(event_store, tmp_path / "hub") as api:
        history = LogStateHistory(event_store)
        api.hub.history = history
        api.hub.snapshots = history
        local = as_local_hub(api, tmp_path / "local")
        assert await cli("snapshot", "take", *local) == 0
        assert "the log is empty" in capsys.readouterr().out
        await append_each(event_store, [registered("east"), registered("west")])
        assert await cli("snapshot", "take", "-o", "json", *local) == 0
        taken = json.loads(capsys.readouterr().out)
        assert taken["eventsSequence"] == await event_store.last_sequence()
        assert taken["schema"] == 1
        assert await cli("snapshot", "take", "-o", "json", *local) == 0
        assert json.loads(capsys.readouterr().out)["id"] == taken["id"]  # nothing new to cover
        viewer = ["--server", api.url, "--token", api.tokens[Role.viewer]]
        assert await cli("snapshot", "ls", *viewer) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:2] == ["ID", "EVENTS"]
        assert [line.split()[0] for line in table[1:]] == [taken["id"]]
        assert await cli("snapshot", "take", *viewer) == 2
        assert "needs the admin role" in capsys.readouterr().err
        await append_each(event_store, [registered("north")])
        assert await cli("state", "--cluster", "north", "-o", "json", *local) == 0
        assert json.loads(capsys.readouterr().out)["registered"] is True
        assert await cli("state", "--cluster", "east", "-o", "json", *local) == 0
        assert json.loads(capsys.readouterr().out)["logSequence"] == taken["eventsSequence"] + 1


async def published_version(store: EventStore, taskset: str) -> int:
    async with asyncio.timeout(30):
        while True:
            async with contextlib.aclosing(store.read(skip_undecodable=True)) as events:
                async for stored in events:
                    event = stored.event
                    if isinstance(event, TasksetPublished) and event.taskset == taskset:
                        return event.taskset_version
            await asyncio.sleep(0.1)


MANIFEST = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: web\n"


async def test_publish_wait_follows_the_rollout_to_completion(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = await reports_store(event_store)
    await append_each(event_store, [registered("east")])
    source = tmp_path / "cfg.yaml"
    source.write_text(MANIFEST)
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        local = as_local_hub(api, tmp_path / "local")
        publishing = asyncio.create_task(
            cli("publish", str(source), "--name", "web", "--cluster", "east", "--wait", *local)
        )
        version = await published_version(event_store, "web")
        await append_each(event_store, [scheduled("east", "web", 0), advanced("web", ["east"])])
        await append_each(reports, [msgspec.structs.replace(applied("east", "web"), generation=1)])
        assert await asyncio.wait_for(publishing, timeout=60) == 0
    captured = capsys.readouterr()
    assert version == 1
    assert "published web v1" in captured.out
    assert "web v1 runs on all 1 target clusters" in captured.out
    assert "1/1 clusters" in captured.err


async def test_publish_wait_exits_non_zero_when_the_rollout_halts(
    event_store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await append_each(event_store, [registered("east")])
    source = tmp_path / "cfg.yaml"
    source.write_text(MANIFEST)
    async with live_api(event_store, tmp_path / "hub", projector=True) as api:
        local = as_local_hub(api, tmp_path / "local")
        publishing = asyncio.create_task(
            cli("publish", str(source), "--name", "web", "--cluster", "east", "--wait", *local)
        )
        await published_version(event_store, "web")
        halted = RolloutHalted(
            id=new_event_id(),
            occurred_at=NOW,
            actor="scheduler",
            taskset="web",
            taskset_version=1,
            wave=0,
            failed=["east"],
            reason="1 cluster failed, over the threshold of 0",
        )
        await append_each(
            event_store, [scheduled("east", "web", 0), advanced("web", ["east"]), halted]
        )
        assert await asyncio.wait_for(publishing, timeout=60) == 1
    err = capsys.readouterr().err
    assert "rollout of web v1 halted at wave 1: 1 cluster failed" in err
    assert "(failed: east)" in err


def advanced(taskset: str, clusters: list[str]) -> RolloutAdvanced:
    return RolloutAdvanced(
        id=new_event_id(),
        occurred_at=NOW,
        actor="scheduler",
        taskset=taskset,
        taskset_version=1,
        wave=0,
        total_waves=1,
        clusters=clusters,
    )


def test_progress_is_read_for_the_published_version_only() -> None:
    rollout = {
        "version": 1,
        "state": "complete",
        "applied": 2,
        "targets": 2,
        "wave": 0,
        "total_waves": 1,
        "failed": [],
        "reason": "",
    }
    status = {"tasksets": [{"name": "web", "rollout": rollout}]}
    assert progress_of(status, "web", 2).state == "waiting", "v1's rollout is not v2's"
    assert progress_of(status, "web", 1) == Progress(
        state="complete", applied=2, targets=2, wave=0, total_waves=1
    )
    assert progress_of(status, "api", 1).state == "waiting"
    line = bar(Progress(state="progressing", applied=1, targets=4, wave=0, total_waves=2))
    assert line.startswith("[" + "#" * 7 + "-" * 23 + "] 1/4 clusters, wave 1/2")
