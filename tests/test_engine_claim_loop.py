"""The claim loop end to end: the real queue on a SQLite file, the real image store, a real worker process
(tiny CPU backend, shared by the module), outcomes read back from the rows."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image, ImageStat
from sqlalchemy import make_url, update

from engine.claim_loop import ClaimLoop
from engine.png_metadata import read_metadata
from engine.settings import EngineSettings
from engine.supervisor import WorkerSupervisor
from storage.database import Database
from storage.images import ImageStore
from storage.jobs import FailureKind, Job, JobOrigin, JobStatus
from storage.queue import JobQueue
from storage.signals import LocalSignals, Topic
from storage.tables import JobRow
from tests.support.new_jobs import NewJobFactory

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.all_databases]

BOUND_S = 30


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def worker() -> AsyncIterator[WorkerSupervisor]:
    settings = EngineSettings(
        backend="tests.support.tiny_backend:create_backend", restart_backoff_s=(0.05, 0.5), load_timeout_s=60
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TINY_BACKEND_STEP_S", "0.2")
        supervisor = WorkerSupervisor(settings, answer_grace_s=5)
        async with asyncio.timeout(60):
            await supervisor.start()
    yield supervisor
    async with asyncio.timeout(BOUND_S):
        await supervisor.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def database(db_url: str) -> AsyncIterator[Database]:
    """conftest's database, opened in this module's event loop (the worker fixture lives in it)."""
    db = Database(db_url)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


@asynccontextmanager
async def claiming(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    *,
    poll_interval_s: float = 0.5,
    outcome_retry_s: tuple[float, float] = (0.5, 10.0),
) -> AsyncIterator[ClaimLoop]:
    claim_loop = ClaimLoop(
        queue,
        image_store,
        signals,
        worker,
        claimer="test-host:1",
        poll_interval_s=poll_interval_s,
        outcome_retry_s=outcome_retry_s,
    )
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(claim_loop.run(stop))
    try:
        yield claim_loop
    finally:
        stop.set()
        async with asyncio.timeout(BOUND_S):
            await task


async def wait_until(
    signals: LocalSignals, condition: Callable[[], Awaitable[bool]], limit_s: float = BOUND_S
) -> None:
    async with asyncio.timeout(limit_s):
        while not await condition():
            await signals.wait(Topic.UPDATED, 0.1)


async def all_final(queue: JobQueue, jobs: list[Job]) -> bool:
    return all([(await queue.get(j.id)).is_final for j in jobs])


async def test_jobs_run_in_fair_order_back_to_back_and_images_are_stored(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    jobs = [
        (await queue.enqueue(make_new_job(user_id=user, prompt=f"picture {n} of {user}", seed=n))).job
        for n, user in enumerate(["alice", "alice", "alice", "bob", "bob", "carol"], start=1)
    ]
    expected_order = [j.id for j in await queue.queued_in_fair_order()]
    async with claiming(queue, image_store, signals, worker) as claim_loop:
        await wait_until(signals, lambda: all_final(queue, jobs))
    done = [await queue.get(j.id) for j in jobs]
    assert {j.status for j in done} == {JobStatus.DONE}
    started = sorted(done, key=lambda j: (j.started_at, j.id))
    assert [j.id for j in started] == expected_order
    assert [j.requester.user_id for j in started][:3] == ["alice", "bob", "carol"]
    for job in done:
        assert job.result_path is not None
        png = await image_store.read(job.result_path)
        assert hashlib.sha256(png).hexdigest() == job.result_sha256
        assert read_metadata(png).request.prompt == job.request.prompt
        assert job.duration_s is not None and job.duration_s > 0
        assert job.step_seconds is not None and job.step_seconds > 0
        assert job.progress_step == job.request.steps
    # Five of the six jobs started while another was queued: the idle time between them was measured.
    assert claim_loop.last_gap_s is not None
    assert claim_loop.last_gpu_idle_s is not None
    print(f"gap between back-to-back jobs: {claim_loop.last_gap_s * 1000:.1f} ms")
    print(f"worker idle between them: {claim_loop.last_gpu_idle_s * 1000:.1f} ms")
    assert claim_loop.last_gap_s < 1.0
    assert 0 <= claim_loop.last_gpu_idle_s < 1.0


async def test_an_idle_loop_wakes_up_on_the_queued_signal(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    # A poll interval far beyond the bound: only the signal can start the job in time.
    async with claiming(queue, image_store, signals, worker, poll_interval_s=600):
        await asyncio.sleep(0.2)  # let the loop find the queue empty and start waiting
        job = (await queue.enqueue(make_new_job())).job
        await wait_until(signals, lambda: all_final(queue, [job]), limit_s=10)
    assert (await queue.get(job.id)).status is JobStatus.DONE


async def test_failures_are_stored_with_their_kind_and_reason(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    boom = (await queue.enqueue(make_new_job(user_id="1", prompt="[boom]"))).job
    oom = (await queue.enqueue(make_new_job(user_id="2", prompt="huge [oom2]"))).job
    fine = (await queue.enqueue(make_new_job(user_id="3"))).job
    async with claiming(queue, image_store, signals, worker):
        await wait_until(signals, lambda: all_final(queue, [boom, oom, fine]))
    boom, oom, fine = [await queue.get(j.id) for j in (boom, oom, fine)]
    assert (boom.status, boom.failure_kind) == (JobStatus.FAILED, FailureKind.ERROR)
    assert boom.error is not None and "boom" in boom.error
    assert (oom.status, oom.failure_kind) == (JobStatus.FAILED, FailureKind.OUT_OF_MEMORY)
    assert oom.error is not None and "ran out of memory" in oom.error
    assert fine.status is JobStatus.DONE


async def test_a_job_whose_worker_dies_is_requeued_once_then_failed_with_the_reason(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    crash = (await queue.enqueue(make_new_job(user_id="1", prompt="[crash]"))).job
    fine = (await queue.enqueue(make_new_job(user_id="2"))).job
    async with claiming(queue, image_store, signals, worker):
        await wait_until(signals, lambda: all_final(queue, [crash, fine]))
    crash, fine = await queue.get(crash.id), await queue.get(fine.id)
    assert (crash.status, crash.failure_kind, crash.attempts) == (
        JobStatus.FAILED,
        FailureKind.WORKER_DIED,
        2,
    )
    assert crash.error is not None and "killed by signal SIGKILL" in crash.error
    assert fine.status is JobStatus.DONE


async def test_cancelling_a_running_job_stops_it_in_the_worker(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    slow = (await queue.enqueue(make_new_job(user_id="1", prompt="[slow]", steps=100))).job
    async with claiming(queue, image_store, signals, worker):

        async def slow_has_progress() -> bool:
            return (await queue.get(slow.id)).progress_step >= 1

        await wait_until(signals, slow_has_progress)
        await queue.cancel(slow.id)
        # 100 steps would take 20 s; the next job is done long before that.
        after = (await queue.enqueue(make_new_job(user_id="2"))).job
        await wait_until(signals, lambda: all_final(queue, [after]), limit_s=10)
    assert (await queue.get(slow.id)).status is JobStatus.CANCELLED
    assert (await queue.get(after.id)).status is JobStatus.DONE


async def test_stopping_puts_the_running_job_back_in_the_queue(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    slow = (await queue.enqueue(make_new_job(prompt="[slow]", steps=100))).job
    loop = asyncio.get_running_loop()
    async with claiming(queue, image_store, signals, worker):

        async def slow_has_progress() -> bool:
            return (await queue.get(slow.id)).progress_step >= 1

        await wait_until(signals, slow_has_progress)
        stopping_at = loop.time()
    assert loop.time() - stopping_at < 5
    back = await queue.get(slow.id)
    # A deliberate stop is not the job's fault: it keeps its attempts and its place.
    assert (back.status, back.attempts, back.claimed_by) == (JobStatus.QUEUED, 0, None)
    # The worker is free again for whoever claims next.
    async with asyncio.timeout(BOUND_S):
        assert (await worker.start()).model == "tiny.safetensors"


QUICK_RETRIES: dict[str, Any] = {"poll_interval_s": 0.2, "outcome_retry_s": (0.05, 0.2)}


async def _log_count(caplog: pytest.LogCaptureFixture, text: str, at_least: int) -> None:
    """Until `at_least` log records contain `text` (bounded)."""
    async with asyncio.timeout(BOUND_S):
        while sum(text in record.getMessage() for record in caplog.records) < at_least:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_an_outcome_the_database_refuses_is_kept_and_recorded_once_it_can_be(
    db_url: str,
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("holds SQLite's write lock from another connection")
    job = (await queue.enqueue(make_new_job(prompt="[slow]", steps=4))).job
    # The claim loop's own connections give up on a lock after 50 ms, like a busy timeout passed.
    impatient = Database(db_url, busy_timeout_ms=50)
    # Used from threads: taking the lock may wait for a write that needs this event loop to finish.
    locker = sqlite3.connect(str(url.database), isolation_level=None, check_same_thread=False, timeout=20)
    impatient_queue = JobQueue(impatient, signals, max_attempts=2)
    try:
        async with claiming(impatient_queue, image_store, signals, worker, **QUICK_RETRIES):
            try:

                async def running() -> bool:
                    return (await queue.get(job.id)).status is JobStatus.RUNNING

                await wait_until(signals, running)
                # Another process holds the database while the job ends.
                await asyncio.to_thread(locker.execute, "BEGIN EXCLUSIVE")
                with caplog.at_level(logging.ERROR, logger="engine.claim_loop"):
                    await _log_count(caplog, f"job={job.id}: could not record its outcome", 3)
                assert (await queue.get(job.id)).status is JobStatus.RUNNING
            finally:
                with contextlib.suppress(sqlite3.Error):
                    locker.execute("ROLLBACK")

            async def done() -> bool:
                return (await queue.get(job.id)).status is JobStatus.DONE

            await wait_until(signals, done)
    finally:
        locker.close()
        await impatient.close()
    finished = await queue.get(job.id)
    assert finished.result_path is not None and finished.attempts == 0
    png = await image_store.read(finished.result_path)
    assert hashlib.sha256(png).hexdigest() == finished.result_sha256


async def test_an_image_the_disk_refuses_is_kept_and_stored_once_it_can_be(
    tmp_path: Path,
    queue: JobQueue,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ImageStore(tmp_path / "full")
    blocker = store.root  # a file where the images folder should be: every write fails
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")
    job = (await queue.enqueue(make_new_job())).job
    async with claiming(queue, store, signals, worker, **QUICK_RETRIES):
        with caplog.at_level(logging.ERROR, logger="engine.claim_loop"):
            await _log_count(caplog, f"job={job.id}: could not store its image", 3)
        assert (await queue.get(job.id)).status is JobStatus.RUNNING
        blocker.unlink()  # the operator frees the disk

        async def done() -> bool:
            return (await queue.get(job.id)).status is JobStatus.DONE

        await wait_until(signals, done)
    finished = await queue.get(job.id)
    assert finished.result_path is not None
    assert hashlib.sha256(await store.read(finished.result_path)).hexdigest() == finished.result_sha256


async def test_a_loop_whose_job_was_taken_over_stops_it_and_writes_nothing_more(
    queue: JobQueue,
    database: Database,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    """The loop stalled past its lease (simulated by running the lease out in the row) and another
    engine took the job over: the loop's next write is refused, it stops the run and moves on."""
    slow = (await queue.enqueue(make_new_job(user_id="1", prompt="[slow]", steps=100))).job
    async with claiming(queue, image_store, signals, worker):

        async def slow_has_progress() -> bool:
            return (await queue.get(slow.id)).progress_step >= 1

        await wait_until(signals, slow_has_progress)
        async with database.write() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id == slow.id)
                .values(lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
            )
        other = JobQueue(database, LocalSignals(), max_attempts=3)
        taken = await other.claim_next("other-host:0")
        assert taken is not None and (taken.id, taken.claim_count) == (slow.id, 2)
        # 100 steps would take 20 s: the loop must have dropped the job to run the next one.
        after = (await queue.enqueue(make_new_job(user_id="2"))).job
        await wait_until(signals, lambda: all_final(queue, [after]), limit_s=10)
    now = await queue.get(slow.id)
    assert (now.status, now.claimed_by, now.claim_count) == (JobStatus.RUNNING, "other-host:0", 2)
    assert now.result_path is None
    assert (await queue.get(after.id)).status is JobStatus.DONE


def _solid_png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


async def test_a_job_of_several_images_from_an_input_image_stores_every_image(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    parent = (await queue.enqueue(make_new_job(prompt="the parent", seed=5))).job
    await queue.cancel(parent.id)
    job = (
        await queue.enqueue(
            make_new_job(
                prompt="red sky",
                seed=40,
                steps=2,
                count=3,
                strength=0.25,
                input_png=_solid_png((255, 0, 0)),  # 32x32: sized to the request's 64x64 by the engine
                parent_id=parent.id,
                origin=JobOrigin.VARY_SUBTLE,
                parent_image_index=0,
            )
        )
    ).job
    async with claiming(queue, image_store, signals, worker):
        await wait_until(signals, lambda: all_final(queue, [job]))
    done = await queue.get(job.id)
    assert done.status is JobStatus.DONE, done.error
    assert len(done.images) == 3 and done.progress_step == done.progress_total == 6
    for index, stored in enumerate(done.images):
        png = await image_store.read(stored.path)
        assert hashlib.sha256(png).hexdigest() == stored.sha256
        meta = read_metadata(png)
        assert (meta.image_index, meta.image_count, meta.source_job) == (index, 3, parent.id)
        assert (meta.request.seed, meta.request.strength) == (40 + index, 0.25)
        with Image.open(io.BytesIO(png)) as image:
            assert image.size == (64, 64)
            red = ImageStat.Stat(image.convert("RGB")).mean[0]
        assert red > 0.75 * 255 * 0.9  # three quarters of the red input shows through
    assert len({stored.sha256 for stored in done.images}) == 3


async def test_an_input_image_that_cannot_be_read_fails_the_job_saying_so(
    queue: JobQueue,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    job = (await queue.enqueue(make_new_job(strength=0.5, input_png=b"\x89PNG broken"))).job
    async with claiming(queue, image_store, signals, worker):
        await wait_until(signals, lambda: all_final(queue, [job]))
    failed = await queue.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.failure_kind is FailureKind.ERROR
    assert failed.error is not None and "input image cannot be read" in failed.error


async def test_a_stored_request_the_worker_cannot_take_fails_with_the_reason(
    queue: JobQueue,
    database: Database,
    image_store: ImageStore,
    signals: LocalSignals,
    worker: WorkerSupervisor,
    make_new_job: NewJobFactory,
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    async with database.write() as session:  # a row no chat side writes: 9 images
        await session.execute(update(JobRow).where(JobRow.id == job.id).values(image_count=9))
    async with claiming(queue, image_store, signals, worker):
        await wait_until(signals, lambda: all_final(queue, [job]))
    failed = await queue.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.failure_kind is FailureKind.ERROR
    assert failed.error is not None and "cannot be run: count is 9" in failed.error
