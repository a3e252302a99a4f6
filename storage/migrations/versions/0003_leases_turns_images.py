"""Leases and fencing, delivery claims, the stored Discord status token, per-user turns, images table.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from storage.tables import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NEVER_STARTED = datetime(1970, 1, 1, tzinfo=UTC)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("status_token", sa.Text(), nullable=True))
        batch.add_column(sa.Column("status_token_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("claim_count", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("lease_expires_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("delivery_claimed_by", sa.String(256), nullable=True))
        batch.add_column(sa.Column("delivery_lease_expires_at", UtcDateTime(), nullable=True))
        batch.add_column(
            sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("delivery_retry_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("delivery_failing_since", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))
        batch.create_index("ix_jobs_user_status_id", ["platform", "user_id", "status", "id"])
        batch.create_index("ix_jobs_status_lease", ["status", "lease_expires_at"])

    op.create_table(
        "user_turns",
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("last_started_at", UtcDateTime(), nullable=False),
        sa.Column("next_job_id", JOB_ID, nullable=True),
        sa.PrimaryKeyConstraint("platform", "user_id", name="pk_user_turns"),
    )
    op.create_index(
        "ix_user_turns_waiting",
        "user_turns",
        ["last_started_at", "next_job_id"],
        sqlite_where=sa.text("next_job_id IS NOT NULL"),
        postgresql_where=sa.text("next_job_id IS NOT NULL"),
    )
    op.create_table(
        "images",
        sa.Column("job_id", JOB_ID, nullable=False),
        sa.Column("claim", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_images_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "claim", name="pk_images"),
    )

    # Every user's turn as the old computed order had it: when their latest job started (or never),
    # and their oldest queued job.
    jobs = sa.table(
        "jobs",
        sa.column("platform", sa.String),
        sa.column("user_id", sa.String),
        sa.column("status", sa.String),
        sa.column("id", JOB_ID),
        sa.column("started_at", UtcDateTime()),
        sa.column("lease_expires_at", UtcDateTime()),
    )
    turns = sa.table(
        "user_turns",
        sa.column("platform", sa.String),
        sa.column("user_id", sa.String),
        sa.column("last_started_at", UtcDateTime()),
        sa.column("next_job_id", JOB_ID),
    )
    queued_id = sa.case((jobs.c.status == "queued", jobs.c.id))
    op.execute(
        turns.insert().from_select(
            ["platform", "user_id", "last_started_at", "next_job_id"],
            sa.select(
                jobs.c.platform,
                jobs.c.user_id,
                sa.func.coalesce(sa.func.max(jobs.c.started_at), sa.literal(NEVER_STARTED, UtcDateTime())),
                sa.func.min(queued_id),
            ).group_by(jobs.c.platform, jobs.c.user_id),
        )
    )
    # Jobs left running by a version without leases: their lease is over now, so any engine takes them.
    op.execute(
        jobs.update()
        .where(jobs.c.status == "running")
        .values(lease_expires_at=sa.literal(NEVER_STARTED, UtcDateTime()))
    )


def downgrade() -> None:
    op.drop_table("images")
    op.drop_index("ix_user_turns_waiting", table_name="user_turns")
    op.drop_table("user_turns")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_status_lease")
        batch.drop_index("ix_jobs_user_status_id")
        for column in (
            "delivery_error",
            "delivery_failing_since",
            "delivery_retry_at",
            "delivery_attempts",
            "delivery_lease_expires_at",
            "delivery_claimed_by",
            "lease_expires_at",
            "claim_count",
            "status_token_at",
            "status_token",
        ):
            batch.drop_column(column)
