"""Settings of the storage layer (the `[storage]` section of the config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StorageSettings(BaseModel):
    """Where jobs and images live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = Field(
        default="sqlite+aiosqlite:///data/majicbot.db",
        description="SQLAlchemy async URL; sqlite+aiosqlite:///PATH or postgresql+asyncpg://...",
    )
    data_dir: Path = Field(default=Path("data"), description="Images are written under DATA_DIR/images.")
    max_attempts: int = Field(
        default=2, ge=1, le=10, description="A job whose worker died this many times is failed."
    )
    busy_timeout_ms: int = Field(default=5000, ge=0, description="SQLite: wait this long for a lock.")
    keep_images_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete stored images (and their rows' image data) this many days after the job "
        "finished; never one that was not delivered yet. None: keep them forever.",
    )
    image_cleanup_interval_s: float = Field(
        default=3600.0, gt=0, description="How often old images are looked for (with keep_images_days)."
    )
    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Claimers and deliverers re-read the job table at least this often, "
        "even without a wake-up signal (another process may have written it).",
    )
    lease_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="An engine renews its lease on a running job at least every third of this; a job "
        "whose lease ran out (its engine died or hung) is taken over by another engine.",
    )
    delivery_lease_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="How long a chat process's claim on showing and posting a job lasts without "
        "renewal; another chat process takes over after it (two processes never post one result).",
    )
    images: Literal["auto", "files", "database"] = Field(
        default="auto",
        description="Where finished PNGs are kept: files under DATA_DIR/images, or the database "
        "(every host can read them). auto: the database on PostgreSQL, files on SQLite.",
    )

    def images_in_database(self, dialect: str) -> bool:
        """Whether images go into the database, for a database of this dialect."""
        if self.images == "auto":
            return dialect != "sqlite"
        return self.images == "database"
