"""Lineage, input images and several result images per job, on SQLite and PostgreSQL: what a job row
records about where it came from, the input image stored with it, every image of a done job, image
indexes in the image store (files and database), retention of every image, and the migration of rows
made before all this."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.database import Database
from storage.images import ImageNotFound, ImageStore
from storage.jobs import JobOrigin, JobStatus, StoredImage
from storage.queue import ActiveLimitReached, JobQueue
from storage.retention import ImageRetention
from storage.signals import LocalSignals
from tests.support.new_jobs import NewJobFactory

pytestmark = pytest.mark.all_databases

PNG = b"\x89PNG input image"


async def test_a_new_job_is_new_with_one_image_and_no_input(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    assert (job.origin, job.parent_image_index, job.request.count, job.request.strength) == (
        JobOrigin.NEW,
        None,
        1,
        None,
    )
    assert not job.has_input_image and job.images == ()
    assert await queue.input_image(job.id) is None


async def test_lineage_count_strength_and_the_input_image_are_stored(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    parent = (await queue.enqueue(make_new_job(count=4))).job
    child = (
        await queue.enqueue(
            make_new_job(
                parent_id=parent.id,
                origin=JobOrigin.VARY_STRONG,
                parent_image_index=2,
                strength=0.7,
                input_png=PNG,
                count=4,
            )
        )
    ).job
    again = await queue.get(child.id)
    assert again == child
    assert (again.parent_id, again.origin, again.parent_image_index) == (parent.id, JobOrigin.VARY_STRONG, 2)
    assert (again.request.count, again.request.strength) == (4, 0.7)
    assert again.has_input_image and len(again.input_sha256 or "") == 64
    assert await queue.input_image(child.id) == PNG
    assert again.progress_total == 4 * again.request.steps


async def test_a_job_of_four_is_one_job_for_the_quota(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    from dataclasses import replace

    await queue.enqueue(replace(make_new_job(count=4), max_active=2))
    await queue.enqueue(replace(make_new_job(count=4), max_active=2))
    with pytest.raises(ActiveLimitReached):
        await queue.enqueue(replace(make_new_job(count=1), max_active=2))


async def test_a_done_job_keeps_every_image_in_order(
    queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job(count=3, steps=2))).job
    claimed = await queue.claim_next("test")
    assert claimed is not None and claimed.id == job.id
    assert claimed.progress_total == 6  # every image's steps
    stored = [
        await image_store.save(job.id, job.request.seed + i, f"png {i}".encode(), claim=1, index=i)
        for i in range(3)
    ]
    done = await queue.mark_done(job.id, stored[0], duration_s=3, step_seconds=0.5, more_images=stored[1:])
    assert done.status is JobStatus.DONE
    assert done.images == tuple(stored)
    assert (done.result_path, done.result_sha256) == (stored[0].path, stored[0].sha256)
    assert (await queue.get(job.id)).images == tuple(stored)
    assert [await image_store.read(image.path) for image in done.images] == [b"png 0", b"png 1", b"png 2"]


@pytest.mark.parametrize("in_database", [False, True])
async def test_the_image_store_keeps_each_index_apart(
    database: Database, queue: JobQueue, make_new_job: NewJobFactory, tmp_path: Path, in_database: bool
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    store = ImageStore(tmp_path / "data", database=database, in_database=in_database)
    first = await store.save(job.id, 5, b"zero", claim=2, index=0)
    second = await store.save(job.id, 6, b"one", claim=2, index=1)
    assert first.path != second.path
    assert (await store.read(first.path), await store.read(second.path)) == (b"zero", b"one")
    await store.delete(second.path)
    assert await store.read(first.path) == b"zero"
    with pytest.raises(ImageNotFound):
        await store.read(second.path)


async def test_a_database_path_without_an_index_is_image_zero(
    database: Database, queue: JobQueue, make_new_job: NewJobFactory, tmp_path: Path
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    store = ImageStore(tmp_path / "data", database=database, in_database=True)
    stored = await store.save(job.id, 5, b"old style", claim=1)
    assert stored.path == f"database:{job.id}/1/0"
    assert await store.read(f"database:{job.id}/1") == b"old style"


async def test_retention_deletes_every_image_of_a_job(
    queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job(count=2))).job
    await queue.claim_next("test")
    stored = [await image_store.save(job.id, 1 + i, b"png", index=i) for i in range(2)]
    await queue.mark_done(job.id, stored[0], duration_s=1, step_seconds=0.1, more_images=stored[1:])
    await queue.mark_delivered(job.id)
    retention = ImageRetention(queue, image_store, keep_days=1, interval_s=60)
    assert await retention.run_once(now=datetime.now(UTC) + timedelta(days=2)) == 1
    for image in stored:
        with pytest.raises(ImageNotFound):
            await image_store.read(image.path)
    expired = await queue.get(job.id)
    assert expired.images == () and expired.result_path is None


async def test_deleting_a_job_deletes_its_input_image(
    database: Database, queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job(input_png=PNG, strength=0.5))).job
    async with database.write() as session:
        await session.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job.id})
    assert await queue.input_image(job.id) is None


async def test_rows_from_before_the_migration_keep_their_images_and_rerolls_become_rerolls(
    db_url: str,
) -> None:
    """A database at revision 0003 (before lineage) with a done job, its reroll and a stored image is
    migrated: the job reads as one image, the reroll as a reroll, and the image keeps its old path."""
    database = Database(db_url)
    try:
        await database.upgrade("0003")
        insert = (
            "INSERT INTO jobs (platform, chat_id, user_id, user_name, prompt, negative_prompt, seed, steps,"
            " width, height, guidance, status, attempts, progress_step, progress_total, created_at,"
            " updated_at, result_path, result_sha256, parent_id) VALUES ('telegram', 'c', 'u', 'n', 'p', '',"
            " 1, 4, 64, 64, 3.5, :status, 0, 4, 4, :now, :now, :path, :sha, :parent)"
        )
        async with database.write() as session:
            now = datetime(2026, 1, 1, tzinfo=UTC)
            first = {"status": "done", "now": now, "path": "database:1/1", "sha": "ab", "parent": None}
            await session.execute(text(insert), first)
            second = {"status": "queued", "now": now, "path": None, "sha": None, "parent": 1}
            await session.execute(text(insert), second)
            await session.execute(
                text(
                    "INSERT INTO images (job_id, claim, png, sha256, size_bytes, created_at)"
                    " VALUES (1, 1, :png, 'ab', 3, :now)"
                ),
                {"png": b"old", "now": now},
            )
        await database.upgrade()
        queue = JobQueue(database, LocalSignals(), max_attempts=2)
        done, reroll = await queue.get(1), await queue.get(2)
        assert done.origin is JobOrigin.NEW and done.request.count == 1
        assert done.images == (StoredImage(path="database:1/1", sha256="ab", size_bytes=0),)
        assert (reroll.origin, reroll.parent_id) == (JobOrigin.REROLL, 1)
        store = ImageStore(Path("unused"), database=database, in_database=True)
        assert await store.read("database:1/1") == b"old"
    finally:
        await database.close()
