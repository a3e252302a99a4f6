"""Each user's own defaults for their commands, one row per platform and user.

Storage keeps the values as given; what is allowed (and what an unset value means) is the chat side's
business. `update` runs the caller's change inside the write transaction, so two changes of one user
at once (two menu choices) never undo each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from storage.clock import database_now, dialect_name
from storage.database import Database
from storage.jobs import Platform
from storage.tables import UserSettingsRow


@dataclass(frozen=True, slots=True)
class StoredSettings:
    """A user's stored choices; None: not chosen (the operator's default applies)."""

    aspect_ratio: str | None = None
    steps: int | None = None
    images: int | None = None
    negative_prompt: str = ""
    style_suffix: str = ""
    show_progress: bool = True


class UserSettingsStore:
    """Read, change and reset users' settings."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, platform: Platform, user_id: str) -> StoredSettings:
        """The user's settings; all unset (`StoredSettings()`) if they never changed one."""
        async with self._db.sessions() as session:
            row = await session.get(UserSettingsRow, (platform, user_id))
            return StoredSettings() if row is None else _to_settings(row)

    async def update(
        self, platform: Platform, user_id: str, change: Callable[[StoredSettings], StoredSettings]
    ) -> StoredSettings:
        """Apply `change` to the user's current settings and store the result, in one transaction.

        `change` may raise (say, a value out of range): then nothing is stored.
        """
        async with self._db.write() as session:
            # Make sure the row exists, then lock it: concurrent first changes must not both insert.
            insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
            await session.execute(
                insert(UserSettingsRow)
                .values(platform=platform, user_id=user_id, updated_at=await database_now(session))
                .on_conflict_do_nothing(index_elements=[UserSettingsRow.platform, UserSettingsRow.user_id])
            )
            row = await session.get(
                UserSettingsRow, (platform, user_id), with_for_update=True, populate_existing=True
            )
            assert row is not None
            changed = change(_to_settings(row))
            for column in _COLUMNS:
                setattr(row, column, getattr(changed, column))
            row.updated_at = await database_now(session)
            return changed

    async def reset(self, platform: Platform, user_id: str) -> bool:
        """Forget the user's settings; whether they had any."""
        async with self._db.write() as session:
            result = await session.execute(
                delete(UserSettingsRow)
                .where(UserSettingsRow.platform == platform, UserSettingsRow.user_id == user_id)
                .returning(UserSettingsRow.user_id)
            )
            return result.first() is not None


def _to_settings(row: UserSettingsRow) -> StoredSettings:
    return StoredSettings(**{column: getattr(row, column) for column in _COLUMNS})


# StoredSettings' fields are the row's columns of the same names.
_COLUMNS = tuple(field.name for field in dataclasses.fields(StoredSettings))
