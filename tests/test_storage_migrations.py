"""Migrations from an empty file, SQLite's settings, and the models matching the migrated schema."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError

from storage.database import MIGRATIONS_DIR, Database
from storage.jobs import ImageRequest, NewJob, Platform, Requester
from storage.queue import JobQueue
from storage.signals import LocalSignals
from storage.tables import Base

pytestmark = pytest.mark.all_databases


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def scalar(database: Database, sql: str) -> object:
    async with database.engine.connect() as connection:
        return (await connection.execute(text(sql))).scalar_one()


async def test_upgrade_from_empty_creates_the_tables_and_records_head(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "majicbot.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await database.upgrade()
        async with database.engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert {"jobs", "alembic_version"} <= tables
        assert await scalar(database, "SELECT version_num FROM alembic_version") == head_revision()
    finally:
        await database.close()
    assert path.is_file(), "the parent directories of the database file are created"


async def test_upgrade_twice_is_a_no_op(database: Database) -> None:
    async with database.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (platform, chat_id, user_id, user_name, prompt, negative_prompt, seed,"
                " steps, width, height, guidance, status, attempts, progress_step, progress_total,"
                " created_at, updated_at) VALUES ('telegram', 'c', 'u', 'n', 'p', '', 1, 4, 64, 64, 3.5,"
                " 'queued', 0, 0, 4, '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')"
            )
        )
    await database.upgrade()
    assert await scalar(database, "SELECT count(*) FROM jobs") == 1
    assert await scalar(database, "SELECT count(*) FROM alembic_version") == 1


async def test_sqlite_runs_in_wal_with_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", busy_timeout_ms=1234)
    try:
        assert await scalar(database, "PRAGMA journal_mode") == "wal"
        assert await scalar(database, "PRAGMA foreign_keys") == 1
        assert await scalar(database, "PRAGMA busy_timeout") == 1234
    finally:
        await database.close()


async def test_the_models_match_the_migrated_schema(database: Database) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


MIGRATE_AT_ONCE = """
import asyncio, sys, time
from pathlib import Path
from storage.database import Database

go = Path(sys.argv[2])
deadline = time.monotonic() + 60
while not go.exists():  # every process imports first, then all start together
    if time.monotonic() > deadline:
        sys.exit("the start signal never came")
    time.sleep(0.005)

async def main() -> None:
    database = Database(sys.argv[1])
    try:
        await database.upgrade()
    finally:
        await database.close()

asyncio.run(main())
"""


@pytest.mark.parametrize("start_from", ["empty", "0001"])
async def test_processes_starting_at_once_all_come_up(db_url: str, tmp_path: Path, start_from: str) -> None:
    """Several real processes migrate one database at the same moment: every one succeeds, once."""
    if start_from != "empty":
        older = Database(db_url)
        try:
            await older.upgrade(start_from)
        finally:
            await older.close()
    go = tmp_path / "go"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MIGRATE_AT_ONCE,
            db_url,
            str(go),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(5)
    ]
    go.touch()
    async with asyncio.timeout(120):
        outputs = [(await process.communicate())[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0] * 5, "\n".join(outputs)
    database = Database(db_url)
    try:
        assert await scalar(database, "SELECT version_num FROM alembic_version") == head_revision()
        assert await scalar(database, "SELECT count(*) FROM alembic_version") == 1
    finally:
        await database.close()


async def test_any_platform_once_migrated_and_nothing_else_changes(db_url: str) -> None:
    """Revision 0006 drops the CHECK that listed the platforms (on SQLite by editing the schema, not
    rebuilding `jobs`, whose rebuild would clear parent ids and delete images): the rows, a reroll's
    parent and the stored images stay, and a job from a platform storage never heard of is stored."""
    database = Database(db_url)
    try:
        await database.upgrade("0005")
        now = datetime(2026, 1, 1, tzinfo=UTC)
        insert = (
            "INSERT INTO jobs (platform, chat_id, user_id, user_name, prompt, negative_prompt, seed, steps,"
            " width, height, guidance, status, attempts, progress_step, progress_total, created_at,"
            " updated_at, parent_id) VALUES (:platform, 'c', 'u', 'n', 'p', '', 1, 4, 64, 64, 3.5, 'done',"
            " 0, 4, 4, :now, :now, :parent)"
        )
        async with database.write() as session:
            await session.execute(text(insert), {"platform": "telegram", "now": now, "parent": None})
            await session.execute(text(insert), {"platform": "discord", "now": now, "parent": 1})
            await session.execute(
                text(
                    "INSERT INTO images (job_id, claim, image_index, png, sha256, size_bytes, created_at)"
                    " VALUES (1, 1, 0, :png, 'ab', 3, :now)"
                ),
                {"png": b"old", "now": now},
            )
        async with database.write() as session:
            with pytest.raises(IntegrityError):
                await session.execute(text(insert), {"platform": "matrix", "now": now, "parent": None})
        await database.upgrade()
        assert await scalar(database, "SELECT version_num FROM alembic_version") == head_revision()
        queue = JobQueue(database, LocalSignals(), max_attempts=2)
        first, second = await queue.get(1), await queue.get(2)
        assert (first.requester.platform, second.requester.platform) == ("telegram", "discord")
        assert second.parent_id == 1
        assert await scalar(database, "SELECT count(*) FROM images WHERE job_id = 1") == 1
        requester = Requester(Platform("matrix"), chat_id="!room", user_id="@ann", user_name="ann")
        stored = (await queue.enqueue(NewJob(requester, ImageRequest("a fox", 1, 4, 64, 64, 3.5)))).job
        assert (await queue.get(stored.id)).requester.platform == "matrix"
        assert [job.id for job in await queue.pending_delivery([Platform("matrix")])] == []
        if database.dialect == "sqlite":
            assert await scalar(database, "PRAGMA integrity_check") == "ok"
    finally:
        await database.close()
