"""Any chat platform: drop the CHECK that listed the platforms a job may come from.

A platform is its adapter's folder (`bot/<platform>/`); storage only keeps its short name. The rows
are unchanged ("discord", "telegram" stay what they are).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_jobs_platform_known"
# The constraint in SQLite's stored CREATE TABLE text, with the comma that joins it to the previous item.
_SQLITE_CONSTRAINT = re.compile(r",\s*CONSTRAINT\s+\"?" + CONSTRAINT + r"\"?\s+CHECK\s*\(platform IN \([^)]*\)\)")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(op.f(CONSTRAINT), "jobs", type_="check")
        return
    # Not a batch rebuild of `jobs`: on SQLite (foreign keys on) dropping the old table would run its
    # ON DELETE actions, clearing every parent_id and deleting every stored image. Removing a CHECK
    # changes nothing stored, so SQLite's documented procedure for it applies instead
    # (https://www.sqlite.org/lang_altertable.html#otheralter): edit the table's CREATE text in the
    # schema, bump the schema version, check the file, all inside this migration's transaction.
    created = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'")
    sql = created.scalar_one()
    narrowed, found = _SQLITE_CONSTRAINT.subn("", sql)
    if found == 0:
        return  # made without it
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.execute(
            sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'jobs'"),
            {"sql": narrowed},
        )
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = [row[0] for row in bind.exec_driver_sql("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise RuntimeError(f"the database failed its integrity check after the migration: {problems}")


def downgrade() -> None:
    # SQLite keeps the wider table: the older code never writes another platform, and a rebuild to put
    # the CHECK back would run the ON DELETE actions described above.
    if op.get_bind().dialect.name != "sqlite":
        op.create_check_constraint(op.f(CONSTRAINT), "jobs", "platform IN ('discord', 'telegram', 'cli')")
