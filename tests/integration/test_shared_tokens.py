"""API tokens in the TOKENS stream (`api.token_stream`): every API replica of a hub shares them.

Two `TokenStore`s on two connections to one real nats-server stand for two API replicas: what
one makes, rotates or revokes holds at once on the other. A single hub's `tokens.json` moves
into the stream by itself, and its tokens keep working.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from api.auth import Role, TokenStore
from api.errors import Conflict
from api.token_stream import SharedTokenTable, migrate_token_file
from events.store import EventStore, connect
from events.streams import TOKENS_STREAM
from tests.conftest import HubNats

FIXTURES = Path(__file__).parent.parent / "fixtures"
OLD_TOKEN = "fbt_0a1b2c3d4e5f_p2QqBLVU2cC5y8XbqzJ0m4cE9hK7sWnRrT1uV3xYzA0"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def replicas(
    event_store: EventStore, hub_nats: HubNats
) -> AsyncIterator[tuple[TokenStore, TokenStore]]:
    """Two token stores, each on its own connection, as two API processes have."""
    other = EventStore(await connect(hub_nats.url, credentials=hub_nats.credentials))
    try:
        first = TokenStore(await SharedTokenTable.open(event_store))
        second = TokenStore(await SharedTokenTable.open(other))
        yield first, second
    finally:
        await other.close()


async def test_a_token_made_through_one_replica_is_known_to_the_other_at_once(
    replicas: tuple[TokenStore, TokenStore],
) -> None:
    one, two = replicas
    record, token = await one.create(role=Role.publisher, name="ci", now=NOW)
    principal = await two.authenticate(token, now=NOW)
    assert principal is not None
    assert (principal.name, principal.role, principal.token_id) == ("ci", Role.publisher, record.id)
    assert [r.name for r in await two.list()] == ["ci"]
    assert await two.authenticate(token + "x", now=NOW) is None
    with pytest.raises(Conflict, match="a token named 'ci' exists already"):
        await two.create(role=Role.viewer, name="ci", now=NOW)


async def test_rotation_and_revocation_through_one_replica_hold_on_the_other(
    replicas: tuple[TokenStore, TokenStore],
) -> None:
    one, two = replicas
    _, old = await one.create(role=Role.viewer, name="dash", now=NOW)
    _, new = await two.rotate("dash", now=NOW, grace=timedelta(0))
    assert await one.authenticate(new, now=NOW) is not None
    assert await one.authenticate(old, now=NOW) is None, "no grace: the old secret is dead"
    await one.revoke("dash")
    assert await two.authenticate(new, now=NOW) is None
    assert await two.list() == []


async def test_two_replicas_rotating_one_token_at_once_cannot_both_win(
    replicas: tuple[TokenStore, TokenStore],
) -> None:
    one, two = replicas
    await one.create(role=Role.viewer, name="race", now=NOW)
    (read_by_two,) = await two.list()
    await one.rotate("race", now=NOW)
    # `two` rotates from what it read before `one` wrote: refused, nothing overwritten.
    later = NOW + timedelta(minutes=1)
    with pytest.raises(Conflict, match="changed through another API replica"):
        await two.table.put(
            msgspec.structs.replace(read_by_two, rotated_at=later), replacing=read_by_two
        )
    (stored,) = await one.list()
    assert stored.rotated_at == NOW, "the first rotation stands"


async def test_the_tokens_hold_digests_never_the_tokens(
    event_store: EventStore, replicas: tuple[TokenStore, TokenStore]
) -> None:
    one, _ = replicas
    record, token = await one.create(role=Role.admin, name="root", now=NOW)
    info = await event_store.stream_info(TOKENS_STREAM)
    assert info["state"]["messages"] == 1
    stored = (await one.table.records())[0]
    assert stored.sha256 == record.sha256
    reply = await event_store.api_request(
        f"STREAM.MSG.GET.{TOKENS_STREAM}", {"last_by_subj": f"fleet.token.{record.id}"}
    )
    raw = str(reply["message"])
    secret = token.removeprefix(f"fbt_{record.id}_")
    assert secret not in raw
    assert token not in raw


async def test_each_replica_keeps_its_own_admin_token_file(
    replicas: tuple[TokenStore, TokenStore], tmp_path: Path
) -> None:
    one, two = replicas
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await one.ensure_admin_token(tmp_path / "a" / "admin.token", now=NOW)
    second = await two.ensure_admin_token(tmp_path / "b" / "admin.token", now=NOW)
    assert first != second
    assert await one.authenticate(second, now=NOW) is not None
    assert await two.authenticate(first, now=NOW) is not None, (
        "one replica's start kept the other's"
    )
    names = sorted(r.name for r in await one.list())
    assert names[0] == "admin"
    assert names[1].startswith("admin-")
    assert await one.ensure_admin_token(tmp_path / "a" / "admin.token", now=NOW) == first
    _, rotated = await two.rotate(names[1], now=NOW)
    assert (tmp_path / "b" / "admin.token").read_text().strip() == rotated
    assert (tmp_path / "a" / "admin.token").read_text().strip() == first


async def test_a_data_dir_with_tokens_json_moves_its_tokens_into_the_stream(
    event_store: EventStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "old-hub"
    data_dir.mkdir()
    path = data_dir / "tokens.json"
    shutil.copy(FIXTURES / "datadir-before-projects" / "tokens.json", path)
    path.chmod(0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    table = await SharedTokenTable.open(event_store)
    tokens = TokenStore(table)
    assert await tokens.authenticate(OLD_TOKEN, now=NOW) is None, "not in the stream yet"
    assert await migrate_token_file(path, table) == 1
    assert not path.exists(), "the file is gone once its tokens are in the stream"
    principal = await tokens.authenticate(OLD_TOKEN, now=NOW)
    assert principal is not None
    assert (principal.role, principal.org_level) == (Role.admin, True)
    assert await migrate_token_file(path, table) == 0, "nothing left to move"
    # A start interrupted after the move: the file is read again, nothing is stored twice.
    shutil.copy(FIXTURES / "datadir-before-projects" / "tokens.json", path)
    assert await migrate_token_file(path, table) == 0
    assert len(await tokens.list()) == 1
    assert not path.exists()


async def test_a_broken_tokens_json_is_refused_naming_the_file_and_left_in_place(
    event_store: EventStore, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"tokens": [{"id": 1}]}')
    table = await SharedTokenTable.open(event_store)
    with pytest.raises(Exception, match=r"tokens\.json is not a valid token file"):
        await migrate_token_file(path, table)
    assert path.exists()
    assert await table.records() == []
