"""Lineage (origin, parent image index), several images per job, strength, input images.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.tables import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMNs, never a batch rebuild of `jobs`: on SQLite (foreign keys on) dropping the old
    # table would run its ON DELETE actions, clearing every parent_id and deleting every stored image.
    op.add_column("jobs", sa.Column("origin", sa.String(16), nullable=False, server_default=sa.text("'new'")))
    op.add_column("jobs", sa.Column("parent_image_index", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("image_count", sa.Integer(), nullable=False, server_default=sa.text("1")))
    op.add_column("jobs", sa.Column("strength", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("input_sha256", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("result_images", sa.Text(), nullable=True))

    # Jobs made before lineage was recorded: one with a parent was a reroll (nothing else had one).
    jobs = sa.table("jobs", sa.column("parent_id", JOB_ID), sa.column("origin", sa.String))
    op.execute(jobs.update().where(jobs.c.parent_id.is_not(None)).values(origin="reroll"))

    # Several images per job: the image's index joins the key (existing images are index 0).
    with op.batch_alter_table("images", recreate="always") as batch:
        batch.add_column(
            sa.Column(
                "image_index", sa.Integer(), nullable=False, server_default=sa.text("0"), autoincrement=False
            )
        )
        batch.drop_constraint("pk_images", type_="primary")
        batch.create_primary_key("pk_images", ["job_id", "claim", "image_index"])

    op.create_table(
        "job_inputs",
        sa.Column("job_id", JOB_ID, nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_inputs_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_inputs"),
    )


def downgrade() -> None:
    op.drop_table("job_inputs")
    images = sa.table("images", sa.column("image_index", sa.Integer))
    op.execute(images.delete().where(images.c.image_index != 0))
    with op.batch_alter_table("images", recreate="always") as batch:
        batch.drop_constraint("pk_images", type_="primary")
        batch.create_primary_key("pk_images", ["job_id", "claim"])
        batch.drop_column("image_index")
    # Dropping columns rebuilds `jobs` on SQLite (see upgrade): keep SQLite's foreign keys off for a
    # downgrade, or accept that parent links and images go.
    for column in ("result_images", "input_sha256", "strength", "image_count", "parent_image_index", "origin"):
        op.drop_column("jobs", column)
