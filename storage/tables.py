"""The job table as SQLAlchemy 2 typed models. Only `storage/` sees rows; everyone else gets `Job`.

The Alembic versions in `storage/migrations/versions/` create exactly this schema (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names are fixed so later migrations can refer to them on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-numbered rowid.
JOB_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores them without an offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no timezone; pass an aware datetime such as datetime.now(UTC).")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobRow(Base):
    """One image job: who asked, what to draw, and where it stands."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(JOB_ID_TYPE, primary_key=True)
    # who asked, and where the answer goes; `platform` is a chat platform's short name, unchecked:
    # a new platform is a new adapter folder, never a schema change (migration 0006)
    platform: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    guild_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(256))
    # what to draw
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    parent_id: Mapped[int | None] = mapped_column(JOB_ID_TYPE, ForeignKey("jobs.id", ondelete="SET NULL"))
    dedupe_key: Mapped[str | None] = mapped_column(String(256))
    # where it stands
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    claimed_by: Mapped[str | None] = mapped_column(String(256))
    progress_step: Mapped[int] = mapped_column(Integer)
    progress_total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # the outcome
    result_path: Mapped[str | None] = mapped_column(Text)
    result_sha256: Mapped[str | None] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)
    step_seconds: Mapped[float | None] = mapped_column(Float)
    # the platform messages that show this job (to edit progress, to find the job from a button)
    status_message_id: Mapped[str | None] = mapped_column(String(64))
    result_message_id: Mapped[str | None] = mapped_column(String(64))
    # Discord: the interaction token that edits the status line (valid 15 minutes from status_token_at),
    # sealed by the chat side (storage keeps it opaque); stored so that any chat process, or this one
    # after a restart, keeps the status line moving.
    status_token: Mapped[str | None] = mapped_column(Text)
    status_token_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # the engine's lease on a running job: claim_count fences writes (a holder whose claim is not the
    # latest is refused), lease_expires_at is renewed while it works; past it, any engine takes over
    claim_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # the chat side's claim on delivering a finished job, and its stored attempts
    delivery_claimed_by: Mapped[str | None] = mapped_column(String(256))
    delivery_lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    delivery_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    delivery_retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    delivery_failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    delivery_error: Mapped[str | None] = mapped_column(Text)
    # decided by the chat side when it queued the job: how to post the result (behind a spoiler, for
    # prompts matching the operator's spoiler list) and whether to edit the status line with progress
    spoiler: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    show_progress: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # lineage: what made the job (a `JobOrigin`; no CHECK constraint, whose addition would make SQLite
    # rebuild the table, and a rebuild of a self-referencing table with foreign keys on clears
    # parent_id) and from which of its parent's images; how many images it makes, the
    # denoising strength of its input image (job_inputs), and every result image (JSON list of
    # [path, sha256, size]; image 0 is also result_path / result_sha256)
    origin: Mapped[str] = mapped_column(String(16), server_default=text("'new'"))
    parent_image_index: Mapped[int | None] = mapped_column(Integer)
    image_count: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    strength: Mapped[float | None] = mapped_column(Float)
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    result_images: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'cancelled')", name="status_known"
        ),
        # the queue (claim, positions, running, recovery)
        Index("ix_jobs_status_id", "status", "id"),
        # fair order: when each user last started a job; a user's oldest queued job
        Index("ix_jobs_user_started", "platform", "user_id", "started_at"),
        Index("ix_jobs_user_status_id", "platform", "user_id", "status", "id"),
        # leases: running jobs whose holder stopped renewing
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # history, active jobs (quotas)
        Index("ix_jobs_user_created", "platform", "user_id", "created_at"),
        # /reroll: the user's last job in a chat
        Index("ix_jobs_chat_user_created", "platform", "chat_id", "user_id", "created_at"),
        # delivery: changed rows, and final rows not yet delivered
        Index("ix_jobs_updated_at", "updated_at"),
        Index("ix_jobs_delivered_status", "delivered_at", "status"),
        Index("ix_jobs_parent_id", "parent_id"),
        # At most one active job per dedupe key (a double-pressed button queues one job).
        Index(
            "uq_jobs_active_dedupe_key",
            "dedupe_key",
            unique=True,
            sqlite_where=text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"),
            postgresql_where=text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"),
        ),
        # Ids are never reused on SQLite, so an old button can never point at a newer job.
        {"sqlite_autoincrement": True},
    )


class UserTurnRow(Base):
    """Each user's place in the fair order, kept up to date by every write that changes the queue.

    A claim takes the user with the smallest (last_started_at, next_job_id) among those with a queued
    job (one index lookup, whatever the queue's length) and runs their `next_job_id`. Users who never
    started a job have last_started_at = NEVER_STARTED, so they go first, by their oldest queued job.
    """

    __tablename__ = "user_turns"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # the user's oldest queued job; NULL while they have none queued
    next_job_id: Mapped[int | None] = mapped_column(JOB_ID_TYPE)

    __table_args__ = (
        Index(
            "ix_user_turns_waiting",
            "last_started_at",
            "next_job_id",
            sqlite_where=text("next_job_id IS NOT NULL"),
            postgresql_where=text("next_job_id IS NOT NULL"),
        ),
    )


class ImageRow(Base):
    """A finished PNG kept in the database (PostgreSQL deployments), readable from every host."""

    __tablename__ = "images"

    job_id: Mapped[int] = mapped_column(
        JOB_ID_TYPE, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    # the claim that made it: an engine that lost its lease never overwrites its successor's image
    claim: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # which of the job's images (0..count-1)
    image_index: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, server_default=text("0")
    )
    png: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class JobInputRow(Base):
    """The image a job starts from (an image prompt, or the parent's picture for vary and upscale), kept
    in the database whatever `storage.images_in_database` says: it is small, every engine host must read
    it, and it must outlive the parent's picture."""

    __tablename__ = "job_inputs"

    job_id: Mapped[int] = mapped_column(
        JOB_ID_TYPE, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    png: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UserSettingsRow(Base):
    """A user's own defaults for their commands; no row: every default is the operator's."""

    __tablename__ = "user_settings"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # NULL: the operator's default (which may change later, and then applies to this user too)
    aspect_ratio: Mapped[str | None] = mapped_column(String(16))
    steps: Mapped[int | None] = mapped_column(Integer)
    images: Mapped[int | None] = mapped_column(Integer)
    negative_prompt: Mapped[str] = mapped_column(Text, server_default=text("''"))
    style_suffix: Mapped[str] = mapped_column(Text, server_default=text("''"))
    show_progress: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class BanRow(Base):
    """A user an operator banned: every command of theirs is refused, and nothing of theirs is queued."""

    __tablename__ = "bans"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    banned_by: Mapped[str] = mapped_column(String(64))
    banned_at: Mapped[datetime] = mapped_column(UtcDateTime())
    reason: Mapped[str] = mapped_column(Text, server_default=text("''"))


NEVER_STARTED = datetime(1970, 1, 1, tzinfo=UTC)
"""UserTurnRow.last_started_at of a user who never started a job: before everyone who did."""
