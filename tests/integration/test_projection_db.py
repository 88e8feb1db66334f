"""The projector's batch path on a real SQLite file: one transaction, all or nothing."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from projector.db import DirectWriter, ProjectionDb, run_to_completion


async def test_a_batch_commits_every_statement_and_a_failing_one_leaves_nothing(
    tmp_path: Path,
) -> None:
    db = await ProjectionDb.open(tmp_path / "p.db")
    try:

        async def two_positions(writer: DirectWriter) -> int:
            await writer.execute("INSERT INTO positions VALUES ('EVENTS', 7)")
            await writer.execute("INSERT INTO positions VALUES ('REPORTS', 3)")
            return 2

        assert await db.write_batch(two_positions) == 2
        assert await db.positions() == {"EVENTS": 7, "REPORTS": 3}

        async def half_then_fail(writer: DirectWriter) -> int:
            await writer.execute("UPDATE positions SET seq = 99 WHERE stream = 'EVENTS'")
            raise LookupError("the batch found something it cannot project")

        with pytest.raises(LookupError):
            await db.write_batch(half_then_fail)
        assert await db.positions() == {"EVENTS": 7, "REPORTS": 3}
    finally:
        await db.close()


def modes_of(directory: Path, name: str) -> dict[str, int]:
    """The permission bits of the database `name` and its companion files."""
    return {f.name: stat.S_IMODE(f.stat().st_mode) for f in directory.glob(f"{name}*")}


async def test_the_read_models_and_their_sqlite_files_are_readable_by_the_hub_user_only(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old.db"
    old.write_bytes(b"")
    old.chmod(0o644)  # as an earlier version left it
    for path in (tmp_path / "p.db", old):
        db = await ProjectionDb.open(path)
        try:

            async def one_position(writer: DirectWriter) -> int:
                await writer.execute("INSERT INTO positions VALUES ('EVENTS', 1)")
                return 1

            await db.write_batch(one_position)
            modes = modes_of(tmp_path, path.name)
            assert set(modes) >= {path.name, f"{path.name}-wal", f"{path.name}-shm"}
            assert set(modes.values()) == {0o600}, modes
        finally:
            await db.close()


def test_work_that_would_wait_for_io_is_refused_not_half_run() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="suspended"):
        run_to_completion(waits())
