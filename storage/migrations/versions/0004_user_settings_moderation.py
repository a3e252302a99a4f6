"""Per-user settings, bans, and the per-job spoiler and show-progress flags.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.tables import UtcDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("spoiler", sa.Boolean(), nullable=False, server_default=sa.text("false")))
        batch.add_column(
            sa.Column("show_progress", sa.Boolean(), nullable=False, server_default=sa.text("true"))
        )

    op.create_table(
        "user_settings",
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("aspect_ratio", sa.String(16), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("images", sa.Integer(), nullable=True),
        sa.Column("negative_prompt", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("style_suffix", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("show_progress", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "user_id", name="pk_user_settings"),
    )
    op.create_table(
        "bans",
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("banned_by", sa.String(64), nullable=False),
        sa.Column("banned_at", UtcDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.PrimaryKeyConstraint("platform", "user_id", name="pk_bans"),
    )


def downgrade() -> None:
    op.drop_table("bans")
    op.drop_table("user_settings")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("show_progress")
        batch.drop_column("spoiler")
