"""Alembic environment.

majicbot runs migrations through `Database.upgrade()`, which hands Alembic an open connection in
``config.attributes["connection"]``. A developer's `alembic -c storage/migrations/alembic.ini ...` has
none, so this opens the database named by MAJICBOT_DATABASE_URL or the ini file's ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from storage.database import Database
from storage.tables import Base


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: later versions rebuild tables through batch operations.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_standalone(url: str) -> None:
    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(run_with)
    finally:
        await database.close()


given = context.config.attributes.get("connection")
if given is not None:
    run_with(given)
elif context.is_offline_mode():
    raise SystemExit(
        "majicbot migrations run against a live database; offline (--sql) mode is not supported."
    )
else:
    url = os.environ.get("MAJICBOT_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit(
            "Set MAJICBOT_DATABASE_URL or sqlalchemy.url in alembic.ini to the database to migrate."
        )
    asyncio.run(run_standalone(url))
