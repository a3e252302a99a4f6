"""Leases on running jobs, fencing by claim number, takeover; delivery claims; images in the database.

Leases are run out by moving `lease_expires_at` into the past in the row, not by sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from storage.database import Database
from storage.images import ImageNotFound, ImageStore
from storage.jobs import FailureKind, JobStatus, StoredImage
from storage.queue import JobQueue, LeaseLost
from storage.signals import LocalSignals, PostgresSignals, Topic
from storage.tables import JobRow
from tests.support.new_jobs import NewJobFactory

pytestmark = pytest.mark.all_databases

PAST = datetime(2000, 1, 1, tzinfo=UTC)
IMAGE = StoredImage(path="/nowhere.png", sha256="0" * 64, size_bytes=3)


async def run_out_engine_lease(database: Database, job_id: int) -> None:
    async with database.write() as session:
        await session.execute(update(JobRow).where(JobRow.id == job_id).values(lease_expires_at=PAST))


async def run_out_delivery_lease(database: Database, job_id: int) -> None:
    async with database.write() as session:
        await session.execute(
            update(JobRow).where(JobRow.id == job_id).values(delivery_lease_expires_at=PAST)
        )


async def test_a_claim_carries_a_lease_that_progress_and_renewals_extend(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    claimed = await queue.claim_next("host-a/cuda:0")
    assert claimed is not None and claimed.id == job.id
    assert claimed.claim_count == 1
    assert claimed.lease_expires_at is not None and claimed.started_at is not None
    assert claimed.lease_expires_at > claimed.started_at
    assert await queue.renew_lease(job.id, claim=1)
    renewed = await queue.get(job.id)
    assert renewed.lease_expires_at is not None and renewed.lease_expires_at >= claimed.lease_expires_at
    assert await queue.record_progress(job.id, 2, 4, claim=1)
    assert not await queue.renew_lease(job.id, claim=7), "a claim that is not the latest renews nothing"


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(
    queue: JobQueue, database: Database, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    first = await queue.claim_next("host-a/cuda:0")
    assert first is not None
    assert await queue.claim_next("host-b/cuda:0") is None, "a live lease is not taken over"

    await run_out_engine_lease(database, job.id)
    second = await queue.claim_next("host-b/cuda:0")
    assert second is not None and second.id == job.id
    assert second.claimed_by == "host-b/cuda:0"
    assert second.claim_count == 2
    assert second.attempts == 1, "the takeover counts an attempt"
    assert "host-a/cuda:0" in (second.error or "")

    # The old holder wakes up: every write it tries is refused and changes nothing.
    assert not await queue.record_progress(job.id, 3, 4, claim=first.claim_count)
    assert not await queue.renew_lease(job.id, first.claim_count)
    with pytest.raises(LeaseLost):
        await queue.mark_done(job.id, IMAGE, duration_s=1, step_seconds=0.25, claim=first.claim_count)
    with pytest.raises(LeaseLost):
        await queue.mark_failed(job.id, FailureKind.ERROR, "late", claim=first.claim_count)
    with pytest.raises(LeaseLost):
        await queue.release(job.id, claim=first.claim_count)
    with pytest.raises(LeaseLost):
        await queue.requeue_after_crash(job.id, "late", claim=first.claim_count)
    still = await queue.get(job.id)
    assert (still.status, still.claimed_by, still.progress_step) == (JobStatus.RUNNING, "host-b/cuda:0", 0)

    done = await queue.mark_done(job.id, IMAGE, duration_s=1, step_seconds=0.25, claim=second.claim_count)
    assert done.status is JobStatus.DONE


async def test_a_job_whose_lease_runs_out_too_often_fails(
    database: Database, make_new_job: NewJobFactory
) -> None:
    queue = JobQueue(database, LocalSignals(), max_attempts=2)
    job = (await queue.enqueue(make_new_job())).job
    for _ in range(2):
        assert await queue.claim_next("host-a/cuda:0") is not None
        await run_out_engine_lease(database, job.id)
    assert await queue.claim_next("host-b/cuda:0") is None
    failed = await queue.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.failure_kind is FailureKind.WORKER_DIED
    assert failed.attempts == 2


async def test_a_taken_over_job_keeps_its_place_in_fair_order(
    queue: JobQueue, database: Database, make_new_job: NewJobFactory
) -> None:
    a1 = (await queue.enqueue(make_new_job(user_id="a"))).job
    a2 = (await queue.enqueue(make_new_job(user_id="a"))).job
    b1 = (await queue.enqueue(make_new_job(user_id="b"))).job
    claimed = await queue.claim_next("host-a")
    assert claimed is not None and claimed.id == a1.id
    await run_out_engine_lease(database, a1.id)
    # Until a claimer takes it back, a1 still counts as running; then it is user a's oldest queued
    # job again: a started most recently, so b goes first, then a1, then a2.
    assert [job.id for job in await queue.queued_in_fair_order()] == [b1.id, a2.id]
    claims = []
    while (job := await queue.claim_next("host-b")) is not None:
        claims.append(job.id)
    assert claims == [b1.id, a1.id, a2.id]


async def test_cancelling_the_head_of_a_users_queue_moves_their_turn_on(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    a1 = (await queue.enqueue(make_new_job(user_id="a"))).job
    a2 = (await queue.enqueue(make_new_job(user_id="a"))).job
    await queue.cancel(a1.id)
    claimed = await queue.claim_next("host")
    assert claimed is not None and claimed.id == a2.id
    assert await queue.claim_next("host") is None


async def test_one_deliverer_holds_a_job_until_its_lease_runs_out(
    queue: JobQueue, database: Database, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    assert await queue.claim_presentation([job.id], "chat-1", lease_s=30) == {job.id}
    assert await queue.claim_presentation([job.id], "chat-2", lease_s=30) == set()
    assert await queue.claim_presentation([job.id], "chat-1", lease_s=30) == {job.id}, "renewable"
    assert await queue.renew_presentations("chat-1", lease_s=30) == 1
    assert (await queue.get(job.id)).delivery_claimed_by == "chat-1"

    await run_out_delivery_lease(database, job.id)
    assert await queue.claim_presentation([job.id], "chat-2", lease_s=30) == {job.id}, "chat-1 died"
    assert await queue.renew_presentations("chat-1", lease_s=30) == 0

    claimed = await queue.claim_next("engine")
    assert claimed is not None
    await queue.mark_done(job.id, IMAGE, duration_s=1, step_seconds=0.25)
    failed_once = await queue.record_delivery_failure(job.id, "Discord answered 503", retry_in_s=5)
    assert failed_once.delivery_attempts == 1
    assert failed_once.delivery_error == "Discord answered 503"
    assert failed_once.delivery_retry_at is not None and failed_once.delivery_failing_since is not None
    again = await queue.record_delivery_failure(job.id, "Discord answered 502", retry_in_s=5)
    assert (again.delivery_attempts, again.delivery_failing_since) == (2, failed_once.delivery_failing_since)
    delivered = await queue.mark_delivered(job.id, result_message_id="m1")
    assert delivered.delivery_claimed_by is None
    assert await queue.claim_presentation([job.id], "chat-1", lease_s=30) == set(), "delivered is final"


async def test_the_status_token_is_stored_for_any_chat_process(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    issued = datetime.now(UTC)
    await queue.set_status_message(job.id, "@original", token="tok-123", token_issued_at=issued)
    stored = await queue.get(job.id)
    assert (stored.status_message_id, stored.status_token) == ("@original", "tok-123")
    assert stored.status_token_at is not None and abs((stored.status_token_at - issued).total_seconds()) < 1
    assert "tok-123" not in repr(stored), "the token stays out of reprs (and so out of logs)"


async def test_images_in_the_database_are_read_back_by_another_store(
    database: Database, db_url: str, tmp_path_factory: pytest.TempPathFactory, make_new_job: NewJobFactory
) -> None:
    queue = JobQueue(database, LocalSignals(), max_attempts=2)
    job = (await queue.enqueue(make_new_job())).job
    engine_side = ImageStore(tmp_path_factory.mktemp("engine"), database=database, in_database=True)
    first = await engine_side.save(job.id, 7, b"\x89PNG first", claim=1)
    second = await engine_side.save(job.id, 7, b"\x89PNG second", claim=2)
    assert first.path != second.path and first.path.startswith("database:")

    other_host = Database(db_url)
    try:
        chat_side = ImageStore(tmp_path_factory.mktemp("chat"), database=other_host)
        assert await chat_side.read(first.path) == b"\x89PNG first"
        assert await chat_side.read(second.path) == b"\x89PNG second"
        with pytest.raises(ImageNotFound):
            await chat_side.read(f"database:{job.id}/9")
        await chat_side.delete(first.path)
        await chat_side.delete(first.path)  # already gone: fine
        with pytest.raises(ImageNotFound):
            await chat_side.read(first.path)
        with pytest.raises(ImageNotFound):
            await chat_side.read(str(tmp_path_factory.getbasetemp() / "missing.png"))
    finally:
        await other_host.close()


async def test_postgres_notifications_wake_another_process(db_url: str) -> None:
    """Two PostgresSignals, as in two processes: a notify on one wakes a waiter on the other."""
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; on SQLite one process serves everything")
    sender, receiver = PostgresSignals.for_url(db_url), PostgresSignals.for_url(db_url)
    await sender.start()
    await receiver.start()
    try:
        waiting = asyncio.create_task(receiver.wait(Topic.QUEUED, timeout=10))
        await asyncio.sleep(0)  # the waiter registers before the notify
        started = asyncio.get_running_loop().time()
        sender.notify(Topic.QUEUED)
        assert await waiting, "woken by the notification, not by the timeout"
        assert asyncio.get_running_loop().time() - started < 5
        # Its own NOTIFY comes back to it from the server: dropped (it woke its local waiters already).
        other = asyncio.create_task(receiver.wait(Topic.UPDATED, timeout=10))
        await asyncio.sleep(0)
        sender.notify(Topic.UPDATED)
        assert not await sender.wait(Topic.UPDATED, timeout=0.5)
        assert await other
    finally:
        await sender.close()
        await receiver.close()
