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

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.database import Database
from storage.images import ImageStore
from storage.queue import JobQueue
from storage.signals import LocalSignals
from tests.support.new_jobs import NewJobFactory, build_new_job

# The Telegram emulator fixture (`emulator`), shared by the Telegram test modules.
pytest_plugins = ["tests.support.telegram_harness"]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'majicbot.db'}"


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
