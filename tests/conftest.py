"""Fixtures shared by every test module: a real SQLite file, the queue on it, an image store.

db_url        URL of a fresh, empty database: a SQLite file in tmp_path (not created yet), or, in modules
              marked `all_databases`, also a PostgreSQL database of its own on the session's server
postgres_server  the session's PostgreSQL server (tests/support/postgres_server.py), started on first use
database      a `Database` on db_url, migrated to head, closed after the test
signals       a `LocalSignals`
queue         a `JobQueue` on database and signals, max_attempts=2
image_store   an `ImageStore` under tmp_path / "data"
make_new_job  a factory: make_new_job(user_id="2", prompt="a dog", ...) -> NewJob;
              annotate it as `tests.support.new_jobs.NewJobFactory`
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from storage.database import Database
from storage.images import ImageStore
from storage.queue import JobQueue
from storage.signals import LocalSignals
from tests.support.new_jobs import NewJobFactory, build_new_job
from tests.support.postgres_server import PostgresServer, PostgresUnavailable

# The Telegram emulator fixture (`emulator`), shared by the Telegram test modules.
pytest_plugins = ["tests.support.telegram_harness"]


POSTGRES_VARIABLE = "MAJICBOT_TEST_POSTGRES_URL"
"""Set to an admin URL (postgresql+asyncpg://postgres@127.0.0.1:5432/postgres) to run the PostgreSQL
half of the database tests on that server instead of one the tests start themselves."""

BOTH_DATABASES = "all_databases"
"""Marker: the module's database tests run twice, on a SQLite file and on a PostgreSQL database."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{BOTH_DATABASES}: run the tests using db_url on SQLite and on PostgreSQL"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker(BOTH_DATABASES):
        metafunc.parametrize("db_backend", ["sqlite", "postgresql"], indirect=True)


class _AdminServer:
    """A PostgreSQL server the tests did not start (MAJICBOT_TEST_POSTGRES_URL)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def create_database(self) -> str:
        name = f"majicbot_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin_execute(self.admin_url, f'CREATE DATABASE "{name}"'))
        return str(make_url(self.admin_url).set(database=name))

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        asyncio.run(_admin_execute(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin_execute(admin_url: str, sql: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(sql))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | _AdminServer]:
    """One PostgreSQL server for the whole run, started on first use (initdb + start take ~2 s)."""
    admin_url = os.environ.get(POSTGRES_VARIABLE)
    if admin_url:
        yield _AdminServer(admin_url)
        return
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        pytest.skip(str(error))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """'sqlite' unless the module is marked all_databases (then both, one after the other)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in tmp_path, or a PostgreSQL database of its own."""
    if db_backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'majicbot.db'}"
        return
    server: PostgresServer | _AdminServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


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
