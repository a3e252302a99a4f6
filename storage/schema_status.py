"""Whether a database has every migration applied (`majicbot doctor`), without changing it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from storage.database import MIGRATIONS_DIR, Database


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The revisions a database is at and the ones this version of majicbot ships."""

    current: tuple[str, ...]
    head: tuple[str, ...]
    known: frozenset[str]  # every revision this version ships

    @property
    def up_to_date(self) -> bool:
        return set(self.current) == set(self.head)

    @property
    def from_a_newer_version(self) -> bool:
        """The database has a revision this version does not know (a newer majicbot migrated it)."""
        return not set(self.current) <= self.known


async def schema_status(database: Database) -> SchemaStatus:
    """Read the applied revisions (a read-only query; an empty database has none)."""
    async with database.engine.connect() as connection:
        return await connection.run_sync(_read_status)


def _read_status(connection: Connection) -> SchemaStatus:
    # Imported here: alembic is slow to import and only this check and upgrades need it.
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    current = MigrationContext.configure(connection).get_current_heads()
    known = frozenset(revision.revision for revision in script.walk_revisions())
    return SchemaStatus(current=tuple(sorted(current)), head=tuple(sorted(script.get_heads())), known=known)
