"""Images on disk: written under a temporary name and renamed, so a crash never leaves half a file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from storage.jobs import StoredImage


class ImageStore:
    """Stores PNGs as DATA_DIR/images/YYYY/MM/<job id>-<seed>.png."""

    def __init__(self, data_dir: Path) -> None:
        # Absolute, so the paths stored in job rows do not depend on the working directory.
        self._root = (Path(data_dir).expanduser() / "images").absolute()

    @property
    def root(self) -> Path:
        return self._root

    async def save(self, job_id: int, seed: int, png: bytes) -> StoredImage:
        """Write atomically (temp name, fsync, rename) off the event loop; return path and sha256."""
        now = datetime.now(UTC)
        path = self._root / f"{now.year:04d}" / f"{now.month:02d}" / f"{job_id}-{seed}.png"
        return await asyncio.to_thread(_write_atomically, path, png)

    async def read(self, path: str) -> bytes:
        """Read a stored image off the event loop."""
        return await asyncio.to_thread(Path(path).read_bytes)

    async def delete(self, path: str) -> None:
        """Remove a stored image off the event loop; one already gone is fine."""
        await asyncio.to_thread(Path(path).unlink, missing_ok=True)


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
