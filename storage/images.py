"""Images on disk: written under a temporary name and renamed, so a crash never leaves half a file.

CONTRACT (helpers: implement; keep the names).
"""

from __future__ import annotations

from pathlib import Path

from storage.jobs import StoredImage


class ImageStore:
    """Stores PNGs as DATA_DIR/images/YYYY/MM/<job id>-<seed>.png."""

    def __init__(self, data_dir: Path) -> None:
        raise NotImplementedError

    async def save(self, job_id: int, seed: int, png: bytes) -> StoredImage:
        """Write atomically (temp name, fsync, rename) off the event loop; return path and sha256."""
        raise NotImplementedError

    async def read(self, path: str) -> bytes:
        """Read a stored image off the event loop."""
        raise NotImplementedError
