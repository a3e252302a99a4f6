"""Opening the database: the async engine, SQLite's WAL and busy timeout, and sessions.

Transactions on SQLite: pysqlite's own implicit BEGIN is switched off and SQLAlchemy's ``begin`` event
issues it instead, so that write transactions can say ``BEGIN IMMEDIATE``: they take the write lock at
their start, and a read-then-write (such as claiming a job) cannot interleave with another writer. On
PostgreSQL a write transaction is a plain one and the queue locks rows with ``FOR UPDATE``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from storage.errors import storage_error

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Execution option carried by the write engine; read by the SQLite ``begin`` listener.
_SQLITE_BEGIN = "majicbot_sqlite_begin"


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

    async def upgrade(self) -> None:
        """Apply Alembic migrations up to head (run at startup and by `majicbot db upgrade`)."""
        # Through the write engine: two processes upgrading at once take turns instead of both trying.
        async with self._write_sessions.begin() as session:
            connection = await session.connection()
            await connection.run_sync(_upgrade_to_head)

    async def close(self) -> None:
        await self._engine.dispose()


def _upgrade_to_head(connection: Connection) -> None:
    # Imported here: only `upgrade()` needs alembic, and it is slow to import.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


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
