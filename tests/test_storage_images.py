"""Images on disk: atomic writes under DATA_DIR/images/YYYY/MM with their sha256."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.images import ImageStore

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


async def test_save_writes_the_bytes_and_their_sha256(image_store: ImageStore, tmp_path: Path) -> None:
    before = datetime.now(UTC)
    stored = await image_store.save(17, 4242, PNG)
    after = datetime.now(UTC)
    path = Path(stored.path)
    assert path.is_absolute()
    images = tmp_path / "data" / "images"
    assert path.parent in {images / f"{t:%Y}" / f"{t:%m}" for t in (before, after)}
    assert path.name == "17-4242.png"
    assert await image_store.read(str(path)) == PNG
    assert stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert stored.size_bytes == len(PNG)
    assert await image_store.read(stored.path) == PNG
    assert [p.name for p in path.parent.iterdir()] == ["17-4242.png"], "no temporary file is left"


async def test_saving_again_replaces_the_file_whole(image_store: ImageStore) -> None:
    first = await image_store.save(1, 1, PNG)
    second = await image_store.save(1, 1, b"other")
    assert first.path == second.path
    assert await image_store.read(second.path) == b"other"
    assert second.sha256 == hashlib.sha256(b"other").hexdigest()


async def test_a_failed_write_leaves_neither_half_a_file_nor_a_temporary(
    image_store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await image_store.save(5, 9, PNG)
    directory = Path(stored.path).parent

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError("disk full")

    # The rename is the commit point: make it fail and check the old image survives intact.
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        await image_store.save(5, 9, b"new and different")
    assert await image_store.read(stored.path) == PNG
    assert [p.name for p in directory.iterdir()] == ["5-9.png"]


async def test_a_relative_data_dir_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stored = await ImageStore(Path("data")).save(2, 3, PNG)
    assert Path(stored.path).is_absolute() and Path(stored.path).is_relative_to(tmp_path / "data")
