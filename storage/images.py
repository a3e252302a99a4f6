"""Where finished PNGs live: files under DATA_DIR/images, or the `images` table of the database.

Files suit one machine (SQLite): written under a temporary name and renamed, so a crash never leaves half
a file. With several hosts on PostgreSQL the engine that made an image and the chat process that posts it
are often on different machines, so images go into the database, which every host already reaches (and
which is then the one thing to back up). A job row's `result_path` says which: a file path, or
``database:<job id>/<claim>/<image index>`` (``database:<job id>/<claim>`` for image 0 of rows written
before jobs made several images); `read` follows either, so switching does not strand older images.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select

from storage.database import Database
from storage.jobs import StoredImage
from storage.tables import ImageRow

DATABASE_PREFIX = "database:"


class ImageNotFound(LookupError):
    """No stored image at that path (deleted, or kept on another host's disk)."""


class ImageStore:
    """Stores PNGs as DATA_DIR/images/YYYY/MM/<job id>-<seed>[-c<claim>][-i<index>].png, or in the database
    when given one with `in_database=True`."""

    def __init__(
        self, data_dir: Path, *, database: Database | None = None, in_database: bool = False
    ) -> None:
        if in_database and database is None:
            raise ValueError("in_database=True needs the Database to store images in")
        # Absolute, so the paths stored in job rows do not depend on the working directory.
        self._root = (Path(data_dir).expanduser() / "images").absolute()
        self._database = database
        self._in_database = in_database

    @property
    def root(self) -> Path:
        return self._root

    @property
    def in_database(self) -> bool:
        return self._in_database

    async def save(
        self, job_id: int, seed: int, png: bytes, *, claim: int = 1, index: int = 0
    ) -> StoredImage:
        """Store image `index` of a job (made under claim number `claim` with `seed`); return where, and
        its sha256."""
        if index < 0:
            raise ValueError(f"image index {index} is below 0")
        if self._database is not None and self._in_database:
            return await _insert(self._database, job_id, claim, index, png)
        now = datetime.now(UTC)
        # A later claim (the job was taken over) gets its own name: the two never overwrite each other.
        suffix = "" if claim <= 1 else f"-c{claim}"
        suffix += "" if index == 0 else f"-i{index}"
        path = self._root / f"{now.year:04d}" / f"{now.month:02d}" / f"{job_id}-{seed}{suffix}.png"
        return await asyncio.to_thread(_write_atomically, path, png)

    async def read(self, path: str) -> bytes:
        """The stored image's bytes (a file is read off the event loop); ImageNotFound if missing."""
        if path.startswith(DATABASE_PREFIX):
            if self._database is None:
                raise ImageNotFound(f"{path} is in the database, but this image store has none.")
            return await _select(self._database, path)
        try:
            return await asyncio.to_thread(Path(path).read_bytes)
        except FileNotFoundError as error:
            raise ImageNotFound(f"{path} does not exist on this host.") from error

    async def delete(self, path: str) -> None:
        """Remove a stored image (file or database row); one already gone is fine."""
        if path.startswith(DATABASE_PREFIX):
            if self._database is None:
                raise ImageNotFound(f"{path} is in the database, but this image store has none.")
            await _delete(self._database, path)
            return
        await asyncio.to_thread(Path(path).unlink, missing_ok=True)


async def _delete(database: Database, path: str) -> None:
    job_id, claim, index = _key(path)
    async with database.write() as session:
        await session.execute(
            delete(ImageRow).where(
                ImageRow.job_id == job_id, ImageRow.claim == claim, ImageRow.image_index == index
            )
        )


def _key(path: str) -> tuple[int, int, int]:
    """(job id, claim, image index) of a database path; paths without an index are image 0."""
    try:
        parts = [int(part) for part in path.removeprefix(DATABASE_PREFIX).split("/")]
    except ValueError as error:
        raise ImageNotFound(f"{path} is not a stored image's path.") from error
    if len(parts) == 2:
        parts.append(0)
    if len(parts) != 3:
        raise ImageNotFound(f"{path} is not a stored image's path.")
    return parts[0], parts[1], parts[2]


async def _insert(database: Database, job_id: int, claim: int, index: int, png: bytes) -> StoredImage:
    sha256 = await asyncio.to_thread(lambda: hashlib.sha256(png).hexdigest())
    async with database.write() as session:
        await session.merge(
            ImageRow(
                job_id=job_id,
                claim=claim,
                image_index=index,
                png=png,
                sha256=sha256,
                size_bytes=len(png),
                created_at=datetime.now(UTC),
            )
        )
    path = f"{DATABASE_PREFIX}{job_id}/{claim}/{index}"
    return StoredImage(path=path, sha256=sha256, size_bytes=len(png))


async def _select(database: Database, path: str) -> bytes:
    job_id, claim, index = _key(path)
    async with database.sessions() as session:
        png = await session.scalar(
            select(ImageRow.png).where(
                ImageRow.job_id == job_id, ImageRow.claim == claim, ImageRow.image_index == index
            )
        )
    if png is None:
        raise ImageNotFound(f"{path}: no such image in the database.")
    return bytes(png)


def _write_atomically(path: Path, data: bytes) -> StoredImage:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return StoredImage(path=str(path), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; Windows cannot open a directory, and does not need this.
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
