"""Lineage (origin, parent image index), several images per job, strength, input images.

Revision ID: 0005
Revises: 0003 (re-point to 0004 when the branch that adds 0004 is merged)
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.tables import UtcDateTime

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ORIGINS = "origin IN ('new', 'reroll', 'vary_subtle', 'vary_strong', 'upscale', 'image_prompt')"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default=sa.text("'new'")))
        batch.add_column(sa.Column("parent_image_index", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("image_count", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch.add_column(sa.Column("strength", sa.Float(), nullable=True))
        batch.add_column(sa.Column("input_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("result_images", sa.Text(), nullable=True))
        batch.create_check_constraint("origin_known", ORIGINS)
        batch.create_check_constraint("image_count_range", "image_count BETWEEN 1 AND 4")

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
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("image_count_range", type_="check")
        batch.drop_constraint("origin_known", type_="check")
        for column in (
            "result_images",
            "input_sha256",
            "strength",
            "image_count",
            "parent_image_index",
            "origin",
        ):
            batch.drop_column(column)
