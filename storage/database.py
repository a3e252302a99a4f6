"""Opening the database: the async engine, SQLite's WAL and busy timeout, and sessions.

CONTRACT (helpers: implement; keep the names).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


class Database:
    """An async engine and its session factory. Dialect-neutral apart from SQLite's pragmas."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        raise NotImplementedError

    @property
    def engine(self) -> AsyncEngine:
        raise NotImplementedError

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        raise NotImplementedError

    async def upgrade(self) -> None:
        """Apply Alembic migrations up to head (run at startup and by `majicbot db upgrade`)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
