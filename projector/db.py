"""The SQLite adapter of the projector: the one module that speaks SQLite.

Writers open the database read-write in WAL mode (readers never block the projector); readers
(the CLI, the API) open it read-only. Every projected batch is one transaction that includes
the new stream positions, so a crash never leaves a view ahead of or behind its position.
Queries go through aiosqlite, one thread hop each; a batch of writes runs whole in one hop on
the writer's second, plain sqlite3 connection (`write_batch`), since a hop per statement was
most of the projector's cost.

The read models hold what the log says about the fleet, so the database and its WAL and
shared-memory files are the hub user's alone (0600): the file is created with that mode before
SQLite opens it (SQLite gives its journal files the database file's mode), and a database left
readable by an older version is tightened when opened.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from projector.errors import ProjectionMissing, ProjectionUnreadable

SCHEMA_VERSION = 2
"""2: the audit index keeps one row per cluster an event names (`ClusterTaskScheduled` names a
chunk of clusters), keyed by stream, sequence and cluster."""
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasksets (
    name TEXT PRIMARY KEY,
    latest_version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    format TEXT NOT NULL,
    placement TEXT NOT NULL,
    rollout TEXT NOT NULL,
    retired INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS taskset_versions (
    taskset TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    source_digest TEXT NOT NULL,
    format TEXT NOT NULL,
    body_size INTEGER NOT NULL,
    published_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (taskset, version)
);
CREATE TABLE IF NOT EXISTS taskset_provenance (
    taskset TEXT NOT NULL,
    version INTEGER NOT NULL,
    provenance TEXT NOT NULL,
    PRIMARY KEY (taskset, version)
);
CREATE TABLE IF NOT EXISTS overrides (
    taskset TEXT NOT NULL,
    name TEXT NOT NULL,
    cluster TEXT NOT NULL,
    selector TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    set_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (taskset, name)
);
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    registered INTEGER NOT NULL,
    registered_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_status (
    cluster TEXT NOT NULL,
    taskset TEXT NOT NULL,
    desired_version INTEGER,
    desired_generation INTEGER,
    desired_digest TEXT,
    removed INTEGER NOT NULL DEFAULT 0,
    wave INTEGER,
    overrides TEXT,
    scheduled_at TEXT,
    refused_version INTEGER,
    refused_reason TEXT,
    applied_version INTEGER,
    applied_generation INTEGER,
    applied_digest TEXT,
    applied_removed INTEGER NOT NULL DEFAULT 0,
    failed_version INTEGER,
    failed_generation INTEGER,
    failed_reason TEXT,
    last_outcome TEXT,
    last_outcome_generation INTEGER,
    last_report_at TEXT,
    drift_count INTEGER NOT NULL DEFAULT 0,
    drifted INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    PRIMARY KEY (cluster, taskset)
);
CREATE TABLE IF NOT EXISTS rollouts (
    taskset TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    wave INTEGER NOT NULL,
    total_waves INTEGER NOT NULL,
    halted INTEGER NOT NULL DEFAULT 0,
    failed TEXT NOT NULL DEFAULT '[]',
    reason TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time TEXT NOT NULL,
    type TEXT NOT NULL,
    cluster TEXT NOT NULL,
    taskset TEXT NOT NULL,
    actor TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (stream, seq, cluster)
);
CREATE TABLE IF NOT EXISTS blueprint_versions (
    blueprint TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    entries TEXT NOT NULL,
    selector TEXT NOT NULL,
    drift_policy TEXT NOT NULL,
    base TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    published_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (blueprint, version)
);
CREATE TABLE IF NOT EXISTS blueprint_assignments (
    blueprint TEXT NOT NULL,
    cluster TEXT NOT NULL,
    pinned_version INTEGER NOT NULL,
    assigned_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (blueprint, cluster)
);
CREATE TABLE IF NOT EXISTS holds (
    cluster TEXT NOT NULL,
    taskset TEXT NOT NULL,
    hold TEXT NOT NULL,
    reason TEXT NOT NULL,
    held_at TEXT NOT NULL,
    PRIMARY KEY (cluster, taskset)
);
CREATE INDEX IF NOT EXISTS audit_by_cluster ON audit (cluster, taskset, time);
CREATE INDEX IF NOT EXISTS audit_by_taskset ON audit (taskset, time);
CREATE INDEX IF NOT EXISTS audit_by_correlation ON audit (correlation_id);
"""

TABLES: dict[str, str] = {
    "positions": "stream",
    "tasksets": "name",
    "taskset_versions": "taskset, version",
    "taskset_provenance": "taskset, version",
    "overrides": "taskset, name",
    "clusters": "name",
    "cluster_status": "cluster, taskset",
    "rollouts": "taskset",
    "audit": "stream, seq, cluster",
    "blueprint_versions": "blueprint, version",
    "blueprint_assignments": "blueprint, cluster",
    "holds": "cluster, taskset",
}
"""Every projected table and its primary key (the order rows are hashed in)."""

Row = dict[str, Any]


PRIVATE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def make_private(path: Path) -> None:
    """Create the database file 0600 if it is missing; make it and its companions 0600."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    os.close(descriptor)
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        if candidate.exists():
            os.chmod(candidate, PRIVATE_MODE)


async def _migrate_audit(connection: aiosqlite.Connection) -> None:
    """Re-key an audit index of schema 1 (one row per event) by cluster too, keeping its rows."""
    async with connection.execute("PRAGMA table_info(audit)") as cursor:
        columns = {str(row[1]): int(row[5]) for row in await cursor.fetchall()}
    if not columns or columns.get("cluster", 0) > 0:
        return
    await connection.executescript(
        "BEGIN;"
        "DROP INDEX IF EXISTS audit_by_cluster;"
        "DROP INDEX IF EXISTS audit_by_taskset;"
        "DROP INDEX IF EXISTS audit_by_correlation;"
        "ALTER TABLE audit RENAME TO audit_schema_1;"
        f"{SCHEMA}"
        "INSERT INTO audit SELECT * FROM audit_schema_1;"
        "DROP TABLE audit_schema_1;"
        "COMMIT;"
    )


def _open_direct(path: Path) -> sqlite3.Connection:
    """The writer's connection for batches: used from one worker thread at a time."""
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


class DirectWriter:
    """Statements straight on a sqlite3 connection, for work run inside a batch's thread.

    Its methods are coroutines only to satisfy the projection's `Writer`: they never suspend,
    so a projection that awaits nothing else runs to completion in one `send`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.connection.execute(sql, params)

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = self.connection.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in self.connection.execute(sql, params).fetchall()]


def run_to_completion(work: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends; refuse one that does."""
    try:
        work.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    work.close()
    raise RuntimeError("a batch suspended inside the database thread (it awaited I/O)")


class ProjectionDb:
    """One connection to the projection database (and, for a writer, a second one for batches:
    a batch runs in one thread hop instead of one per statement)."""

    def __init__(
        self, connection: aiosqlite.Connection, path: Path, direct: sqlite3.Connection | None = None
    ) -> None:
        self.connection = connection
        self.path = path
        self._direct = direct
        self._batch_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> ProjectionDb:
        """Open (creating if needed) for writing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            make_private(path)
            connection = await aiosqlite.connect(path)
            connection.row_factory = aiosqlite.Row
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")
            await _migrate_audit(connection)
            await connection.executescript(SCHEMA)
            await connection.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            await connection.commit()
            direct = await asyncio.to_thread(_open_direct, path)
        except (sqlite3.Error, OSError) as e:
            raise ProjectionUnreadable(f"cannot open the projection {path}: {e}") from e
        return cls(connection, path, direct)

    @classmethod
    async def open_readonly(cls, path: Path) -> ProjectionDb:
        if not await asyncio.to_thread(path.exists):
            raise ProjectionMissing(
                f"no projection at {path}: start the hub with `fleetbus up`, "
                "or build one with `fleetbus projector rebuild`"
            )
        try:
            connection = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
            connection.row_factory = aiosqlite.Row
        except sqlite3.Error as e:
            raise ProjectionUnreadable(f"cannot open the projection {path}: {e}") from e
        return cls(connection, path)

    async def close(self) -> None:
        if self._direct is not None:
            await asyncio.to_thread(self._direct.close)
        await self.connection.close()

    async def write_batch(self, work: Callable[[DirectWriter], Coroutine[Any, Any, T]]) -> T:
        """Run `work` as one transaction in a worker thread, its statements straight on SQLite.

        `work` may await only the writer it is given (it must not suspend); committed when it
        returns, rolled back if it raises."""
        if self._direct is None:
            raise ProjectionUnreadable(f"the projection {self.path} is open read-only")
        direct = self._direct

        def in_thread() -> T:
            direct.execute("BEGIN IMMEDIATE")
            try:
                result = run_to_completion(work(DirectWriter(direct)))
            except BaseException:
                direct.rollback()
                raise
            direct.commit()
            return result

        async with self._batch_lock:
            try:
                return await asyncio.to_thread(in_thread)
            except sqlite3.Error as e:
                raise ProjectionUnreadable(f"write to {self.path} failed: {e}") from e

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            async with self.connection.execute(sql, params) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as e:
            raise ProjectionUnreadable(f"query on {self.path} failed: {e}") from e
        return [dict(row) for row in rows]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            await self.connection.execute(sql, params)
        except sqlite3.Error as e:
            raise ProjectionUnreadable(f"write to {self.path} failed: {e}") from e

    async def positions(self) -> dict[str, int]:
        rows = await self.fetch_all("SELECT stream, seq FROM positions")
        return {str(row["stream"]): int(row["seq"]) for row in rows}

    async def table_digests(self) -> dict[str, str]:
        """sha256 of every projected table's rows in primary-key order."""
        digests = {}
        for table, key in TABLES.items():
            hasher = hashlib.sha256()
            for row in await self.fetch_all(f"SELECT * FROM {table} ORDER BY {key}"):
                hasher.update(repr(sorted(row.items())).encode())
            digests[table] = "sha256:" + hasher.hexdigest()
        return digests
