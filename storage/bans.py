"""Banned users: who banned them, when and why. `JobQueue.enqueue` refuses a banned user's jobs in the
transaction that would insert them, so a ban takes effect on every host at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from storage.clock import database_now, dialect_name
from storage.database import Database
from storage.jobs import Platform
from storage.tables import BanRow


@dataclass(frozen=True, slots=True)
class Ban:
    platform: Platform
    user_id: str
    banned_by: str  # the operator's user id, on the same platform
    banned_at: datetime
    reason: str


class UserBanned(Exception):
    """The requester is banned; nothing was queued."""

    def __init__(self, ban: Ban) -> None:
        super().__init__(f"user {ban.user_id} on {ban.platform} is banned")
        self.ban = ban


class BanList:
    """Ban, unban and look up users (one row per platform and user)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def ban(self, platform: Platform, user_id: str, *, banned_by: str, reason: str = "") -> Ban:
        """Ban the user (again: the newest operator, time and reason replace the old ones)."""
        async with self._db.write() as session:
            values = {
                "platform": platform,
                "user_id": user_id,
                "banned_by": banned_by,
                "banned_at": await database_now(session),
                "reason": reason,
            }
            insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
            statement = insert(BanRow).values(values)
            # One statement, so two operators banning the same user at once cannot collide.
            row = await session.scalar(
                statement.on_conflict_do_update(
                    index_elements=[BanRow.platform, BanRow.user_id],
                    set_={key: statement.excluded[key] for key in ("banned_by", "banned_at", "reason")},
                ).returning(BanRow),
                execution_options={"populate_existing": True},
            )
            assert row is not None
            return _to_ban(row)

    async def unban(self, platform: Platform, user_id: str) -> Ban | None:
        """Lift the ban; the ban that was lifted, or None if the user was not banned."""
        async with self._db.write() as session:
            row = await session.get(BanRow, (platform, user_id), with_for_update=True)
            if row is None:
                return None
            ban = _to_ban(row)
            await session.execute(
                delete(BanRow).where(BanRow.platform == platform, BanRow.user_id == user_id)
            )
            return ban

    async def get(self, platform: Platform, user_id: str) -> Ban | None:
        async with self._db.sessions() as session:
            return await find_ban(session, platform, user_id)

    async def all(self, platform: Platform) -> Sequence[Ban]:
        """The platform's bans, newest first."""
        async with self._db.sessions() as session:
            rows = await session.scalars(
                select(BanRow)
                .where(BanRow.platform == platform)
                .order_by(BanRow.banned_at.desc(), BanRow.user_id)
            )
            return [_to_ban(row) for row in rows]


async def find_ban(session: AsyncSession, platform: Platform, user_id: str) -> Ban | None:
    """The user's ban, read in the caller's transaction (enqueue's)."""
    row = await session.get(BanRow, (platform, user_id))
    return None if row is None else _to_ban(row)


def _to_ban(row: BanRow) -> Ban:
    return Ban(
        platform=Platform(row.platform),
        user_id=row.user_id,
        banned_by=row.banned_by,
        banned_at=row.banned_at,
        reason=row.reason,
    )
