"""Opening the database: the async engine, SQLite's WAL and busy timeout, and sessions.

Transactions on SQLite: pysqlite's own implicit BEGIN is switched off and SQLAlchemy's ``begin`` event
issues it instead, so that write transactions can say ``BEGIN IMMEDIATE``: they take the write lock at
their start, and a read-then-write (such as claiming a job) cannot interleave with another writer. On
PostgreSQL a write transaction is a plain one and the queue locks rows with ``FOR UPDATE``.

Migrations run under a lock, so any number of processes may start at once on an empty or older
database: on PostgreSQL a transaction-level advisory lock; on SQLite an exclusive lock on the file
``<database>.migrate.lock`` beside it, and then the write lock of ``BEGIN IMMEDIATE``. The first process
migrates; the others wait their turn and find the schema at head. (A write lock held by something else
for longer than the busy timeout still fails the usual way: "locked by another process".)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from storage.errors import storage_error

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Execution option carried by the write engine; read by the SQLite ``begin`` listener.
_SQLITE_BEGIN = "majicbot_sqlite_begin"

MIGRATION_LOCK_KEY = 0x6D616A6963  # "majic": the advisory lock every PostgreSQL migration takes
MIGRATION_WAIT_S = 300.0
"""How long a starting process waits for another one's migrations before it gives up."""

logger = logging.getLogger(__name__)


class Database:
    """An async engine and its session factory. Dialect-neutral apart from SQLite's pragmas."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        parsed = make_url(url)
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        if self._is_sqlite:
            _make_parent_dir(parsed)
        self._engine = create_async_engine(parsed)
        if self._is_sqlite:
            _install_sqlite_listeners(self._engine, busy_timeout_ms)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        write_engine = self._engine.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
        self._write_sessions = async_sessionmaker(write_engine, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for reading (and for writes that need no lock taken up front)."""
        return self._sessions

    @property
    def is_sqlite(self) -> bool:
        return self._is_sqlite

    @property
    def dialect(self) -> str:
        """The backend's name: "sqlite" or "postgresql"."""
        return self._engine.dialect.name

    @property
    def url(self) -> URL:
        return self._engine.url

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction, committed when the block ends and rolled back if it raises.

        A full disk or a lock held past the busy timeout raise `StorageFull` / `StorageBusy`.

        The transaction starts (and on SQLite takes the write lock) before the block runs, so timestamps
        taken inside the block follow the order in which writers commit.
        """
        try:
            async with self._write_sessions.begin() as session:
                await session.connection()
                yield session
        except OperationalError as error:
            named = storage_error(error)
            if named is None:
                raise
            raise named from error

    async def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to `revision` (head: at startup and by `majicbot db upgrade`).

        Safe with many processes starting at once: they take turns under a database lock.
        """
        async with self._migration_file_lock():
            await self._upgrade_locked(revision)

    @asynccontextmanager
    async def _migration_file_lock(self) -> AsyncIterator[None]:
        """SQLite: one migrating process at a time, through a lock file beside the database (the
        others wait here, not on SQLite's busy timeout). Nothing on PostgreSQL or in memory."""
        database = self._engine.url.database
        if not self._is_sqlite or not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        path = _migration_lock_path(database)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + MIGRATION_WAIT_S
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"another process has been migrating {database} for over "
                            f"{MIGRATION_WAIT_S:.0f} s; let it finish or stop it, then start again"
                        ) from None
                    await asyncio.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            with contextlib.suppress(OSError):
                os.close(descriptor)

    async def _upgrade_locked(self, revision: str) -> None:
        # Through the write engine: on SQLite BEGIN IMMEDIATE is the lock.
        async with self._write_sessions.begin() as session:
            connection = await session.connection()
            if self.dialect == "postgresql":
                # Held until this transaction ends; PostgreSQL's DDL is transactional, so a second
                # process waits here and then sees the finished schema.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(_upgrade_to, revision)

    async def close(self) -> None:
        await self._engine.dispose()


def _upgrade_to(connection: Connection, revision: str) -> None:
    # Imported here: only `upgrade()` needs alembic, and it is slow to import.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _migration_lock_path(database: str) -> Path:
    # The OS releases the lock when its holder dies, so a crashed process never leaves it held.
    path = Path(database).expanduser()
    return path.with_name(path.name + ".migrate.lock")


def _make_parent_dir(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_listeners(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide when and how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # WAL with synchronous=NORMAL is durable across application crashes; only a power cut
            # can lose the last commits, never corrupt the file.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
