"""Fixtures shared by every test module: a real SQLite file, the queue on it, an image store.

db_url        sqlite+aiosqlite URL of a fresh file in tmp_path (not created yet)
database      a `Database` on db_url, migrated to head, closed after the test
signals       a `LocalSignals`
queue         a `JobQueue` on database and signals, max_attempts=2
image_store   an `ImageStore` under tmp_path / "data"
make_new_job  a factory: make_new_job(user_id="2", prompt="a dog", ...) -> NewJob;
              annotate it as `tests.support.new_jobs.NewJobFactory`
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from storage.database import Database
from storage.images import ImageStore
from storage.queue import JobQueue
from storage.signals import LocalSignals
from tests.support.new_jobs import NewJobFactory, build_new_job

# The Telegram emulator fixture (`emulator`), shared by the Telegram test modules.
pytest_plugins = ["tests.support.telegram_harness"]


POSTGRES_VARIABLE = "MAJICBOT_TEST_POSTGRES_URL"
"""Set to an admin URL (postgresql+asyncpg://postgres@127.0.0.1:5432/postgres) to run the database
tests against PostgreSQL instead of SQLite files: each test then gets a database of its own."""


@pytest.fixture
async def db_url(tmp_path: Path) -> AsyncIterator[str]:
    admin_url = os.environ.get(POSTGRES_VARIABLE)
    if not admin_url:
        yield f"sqlite+aiosqlite:///{tmp_path / 'majicbot.db'}"
        return
    name = f"majicbot_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield str(make_url(admin_url).set(database=name))
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def signals() -> LocalSignals:
    return LocalSignals()


@pytest.fixture
def queue(database: Database, signals: LocalSignals) -> JobQueue:
    return JobQueue(database, signals, max_attempts=2)


@pytest.fixture
def image_store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data")


@pytest.fixture
def make_new_job() -> NewJobFactory:
    return build_new_job
