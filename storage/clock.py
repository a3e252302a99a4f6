"""Now, as every host agrees on it: the database's clock on PostgreSQL, this host's on SQLite (one host)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


async def database_now(session: AsyncSession) -> datetime:
    """Now, by the database's clock where there is one to share (PostgreSQL), else this host's.

    Taken inside a write transaction, times follow the order in which writers commit.
    """
    if dialect_name(session) == "postgresql":
        value = await session.scalar(select(func.clock_timestamp()))
        assert isinstance(value, datetime)
        return value.astimezone(UTC)
    return datetime.now(UTC)


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    assert bind is not None, "sessions come from Database, which binds them"
    return bind.dialect.name
