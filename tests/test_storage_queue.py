"""The job queue on a real SQLite file: lifecycle, transitions, dedupe, recovery and the queries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from bot.discord import DISCORD
from bot.telegram import TELEGRAM
from storage.database import Database
from storage.jobs import FailureKind, JobStatus, StoredImage
from storage.queue import InvalidTransition, JobNotFound, JobQueue
from storage.signals import LocalSignals, Topic
from storage.tables import JobRow
from tests.support.new_jobs import NewJobFactory

pytestmark = pytest.mark.all_databases

IMAGE = StoredImage(path="/data/images/2026/01/1-1.png", sha256="ab" * 32, size_bytes=10)


class RecordingSignals(LocalSignals):
    def __init__(self) -> None:
        super().__init__()
        self.topics: list[Topic] = []

    def notify(self, topic: Topic) -> None:
        self.topics.append(topic)
        super().notify(topic)


@pytest.fixture
def recorded() -> RecordingSignals:
    return RecordingSignals()


@pytest.fixture
def watched_queue(database: Database, recorded: RecordingSignals) -> JobQueue:
    return JobQueue(database, recorded, max_attempts=2)


async def finish(queue: JobQueue, job_id: int) -> None:
    await queue.mark_done(job_id, IMAGE, duration_s=2.0, step_seconds=0.5)


async def test_a_job_goes_from_queued_to_delivered(
    watched_queue: JobQueue, recorded: RecordingSignals, make_new_job: NewJobFactory
) -> None:
    queue = watched_queue
    result = await queue.enqueue(make_new_job(prompt="a red fox", seed=42, guild_id="9"))
    assert result.created
    job = result.job
    assert (job.status, job.attempts, job.progress_step, job.progress_total) == (JobStatus.QUEUED, 0, 0, 4)
    assert job.request.prompt == "a red fox" and job.request.seed == 42
    assert job.requester.guild_id == "9" and job.created_at.tzinfo is UTC
    assert recorded.topics == [Topic.QUEUED]

    claimed = await queue.claim_next("host-a")
    assert claimed is not None and claimed.id == job.id
    assert claimed.status is JobStatus.RUNNING and claimed.claimed_by == "host-a"
    assert claimed.started_at is not None and claimed.started_at.tzinfo is UTC
    assert await queue.claim_next("host-b") is None

    assert await queue.record_progress(job.id, 3, 4)
    assert (await queue.get(job.id)).progress_step == 3

    done = await queue.mark_done(job.id, IMAGE, duration_s=2.0, step_seconds=0.5)
    assert done.status is JobStatus.DONE and done.finished_at is not None
    assert (done.result_path, done.result_sha256) == (IMAGE.path, IMAGE.sha256)
    assert (done.duration_s, done.step_seconds, done.progress_step) == (2.0, 0.5, 4)
    assert [j.id for j in await queue.pending_delivery([TELEGRAM])] == [job.id]

    delivered = await queue.mark_delivered(job.id, result_message_id="m-1")
    assert delivered.delivered_at is not None and delivered.result_message_id == "m-1"
    assert await queue.pending_delivery([TELEGRAM]) == []
    again = await queue.mark_delivered(job.id, result_message_id="m-2")
    assert again.delivered_at == delivered.delivered_at and again.result_message_id == "m-1"
    assert recorded.topics == [Topic.QUEUED] + [Topic.UPDATED] * 4


async def test_every_write_bumps_updated_at(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    job = (await queue.enqueue(make_new_job())).job
    stamps: list[datetime] = []

    async def stamp() -> None:
        updated_at = (await queue.get(job.id)).updated_at
        assert updated_at is not None and updated_at.tzinfo is UTC
        stamps.append(updated_at)

    await stamp()
    await queue.set_status_message(job.id, "status-1")
    await stamp()
    await queue.claim_next("a")
    await stamp()
    await queue.record_progress(job.id, 1, 4)
    await stamp()
    await finish(queue, job.id)
    await stamp()
    await queue.mark_delivered(job.id)
    await stamp()
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert (await queue.get(job.id)).status_message_id == "status-1"


async def test_refused_transitions_raise_and_change_nothing(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    queued = (await queue.enqueue(make_new_job())).job
    with pytest.raises(InvalidTransition, match="queued"):
        await finish(queue, queued.id)
    with pytest.raises(InvalidTransition):
        await queue.mark_failed(queued.id, FailureKind.ERROR, "no")
    with pytest.raises(InvalidTransition):
        await queue.requeue_after_crash(queued.id, "no")
    with pytest.raises(InvalidTransition):
        await queue.mark_delivered(queued.id)
    assert (await queue.get(queued.id)).status is JobStatus.QUEUED

    await queue.claim_next("a")
    cancelled = await queue.cancel(queued.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    # The worker finishing after the user cancelled must not bring the job back.
    assert not await queue.record_progress(queued.id, 2, 4)
    for attempt in (
        finish(queue, queued.id),
        queue.mark_failed(queued.id, FailureKind.TIMEOUT, "late"),
        queue.requeue_after_crash(queued.id, "late"),
    ):
        with pytest.raises(InvalidTransition, match="cancelled"):
            await attempt
    assert await queue.cancel(queued.id) == cancelled, "cancel is idempotent on a final job"
    assert await queue.claim_next("a") is None


async def test_final_jobs_never_change_status(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    for outcome in ("done", "failed"):
        job = (await queue.enqueue(make_new_job())).job
        await queue.claim_next("a")
        if outcome == "done":
            final = await queue.mark_done(job.id, IMAGE, duration_s=1, step_seconds=0.25)
        else:
            final = await queue.mark_failed(job.id, FailureKind.OUT_OF_MEMORY, "too big")
            assert final.failure_kind is FailureKind.OUT_OF_MEMORY and final.error == "too big"
        assert await queue.cancel(job.id) == final
        with pytest.raises(InvalidTransition):
            await queue.requeue_after_crash(job.id, "x")
        with pytest.raises(InvalidTransition):
            await finish(queue, job.id)


async def test_unknown_ids_raise_job_not_found(queue: JobQueue) -> None:
    with pytest.raises(JobNotFound):
        await queue.get(999)
    with pytest.raises(JobNotFound):
        await queue.cancel(999)
    with pytest.raises(JobNotFound):
        await queue.record_progress(999, 1, 4)
    with pytest.raises(JobNotFound):
        await finish(queue, 999)
    assert await queue.position(999) is None


async def test_a_dedupe_key_held_by_an_active_job_returns_that_job(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    first = await queue.enqueue(make_new_job(dedupe_key="reroll:1:user 1"))
    second = await queue.enqueue(make_new_job(dedupe_key="reroll:1:user 1", seed=99))
    assert first.created and not second.created
    assert second.job == first.job
    other = await queue.enqueue(make_new_job(dedupe_key="reroll:2:user 1"))
    assert other.created and other.job.id != first.job.id

    await queue.claim_next("a")  # still active while running
    assert not (await queue.enqueue(make_new_job(dedupe_key="reroll:1:user 1"))).created
    await finish(queue, first.job.id)
    later = await queue.enqueue(make_new_job(dedupe_key="reroll:1:user 1"))
    assert later.created and later.job.id != first.job.id


async def test_parent_job_is_kept_for_rerolls(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    parent = (await queue.enqueue(make_new_job())).job
    child = (await queue.enqueue(make_new_job(parent_id=parent.id, seed=7))).job
    assert (await queue.get(child.id)).parent_id == parent.id


async def test_a_crashed_job_is_requeued_then_failed_past_max_attempts(
    watched_queue: JobQueue, recorded: RecordingSignals, make_new_job: NewJobFactory
) -> None:
    queue = watched_queue
    job = (await queue.enqueue(make_new_job())).job
    await queue.claim_next("a")
    requeued = await queue.requeue_after_crash(job.id, "The worker process died.")
    assert (requeued.status, requeued.attempts, requeued.claimed_by) == (JobStatus.QUEUED, 1, None)
    assert recorded.topics[-1:] == [Topic.QUEUED]

    again = await queue.claim_next("a")
    assert again is not None and again.id == job.id and again.attempts == 1
    failed = await queue.requeue_after_crash(job.id, "The worker process died.")
    assert (failed.status, failed.attempts, failed.failure_kind) == (
        JobStatus.FAILED,
        2,
        FailureKind.WORKER_DIED,
    )
    assert failed.error is not None and "worker process died" in failed.error
    assert recorded.topics[-1:] == [Topic.UPDATED]
    assert await queue.claim_next("a") is None


async def test_recovery_requeues_fails_and_reports_undelivered(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    ids = [(await queue.enqueue(make_new_job(user_id=str(n)))).job.id for n in range(4)]
    delivered, undelivered, mine, theirs = ids
    for job_id in (delivered, undelivered):
        assert (await queue.claim_next("a")) is not None
        await finish(queue, job_id)
    await queue.mark_delivered(delivered)
    assert (await queue.claim_next("a")).id == mine  # type: ignore[union-attr]
    assert (await queue.claim_next("b")).id == theirs  # type: ignore[union-attr]
    # `theirs` already died once on host b
    await queue.requeue_after_crash(theirs, "died")
    assert (await queue.claim_next("b")).id == theirs  # type: ignore[union-attr]
    waiting = (await queue.enqueue(make_new_job(user_id="9"))).job.id

    report = await queue.recover("a")
    assert [j.id for j in report.requeued] == [mine]
    assert report.requeued[0].attempts == 1
    assert report.failed == ()
    assert [j.id for j in report.undelivered] == [undelivered]
    assert (await queue.get(theirs)).status is JobStatus.RUNNING, "another host's job is left alone"

    report = await queue.recover()
    assert report.requeued == ()
    assert [j.id for j in report.failed] == [theirs]
    assert report.failed[0].failure_kind is FailureKind.WORKER_DIED
    assert [j.id for j in report.undelivered] == [undelivered, theirs]

    # A delivered job is never run again, whatever is claimed from now on.
    claimed = []
    while (job := await queue.claim_next("a")) is not None:
        claimed.append(job.id)
    assert sorted(claimed) == [mine, waiting]
    assert (await queue.get(delivered)).status is JobStatus.DONE


async def test_positions_follow_fair_order_and_agree_with_claims(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    # "old" ran a job before; "x" and "y" never did, so they go first, by their oldest job.
    await queue.enqueue(make_new_job(user_id="old"))
    await queue.claim_next("a")
    users = ["old", "x", "x", "x", "y", "old", "y", "z"]
    ids = [(await queue.enqueue(make_new_job(user_id=user))).job.id for user in users]
    by_user = dict(zip(ids, users, strict=True))

    order = [job.id for job in await queue.queued_in_fair_order()]
    assert [by_user[i] for i in order] == ["x", "y", "z", "old", "x", "y", "old", "x"]
    for index, job_id in enumerate(order):
        position = await queue.position(job_id)
        assert position is not None and position.position == index + 1
        assert [j.id for j in position.jobs_ahead] == order[:index]
        assert len(position.running) == 1

    claimed = []
    while (job := await queue.claim_next("a")) is not None:
        claimed.append(job.id)
        assert [j.id for j in await queue.queued_in_fair_order()] == order[len(claimed) :]
    assert claimed == order


async def test_user_queries(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    a1 = (await queue.enqueue(make_new_job(user_id="a", chat_id="c1", prompt="one"))).job
    a2 = (await queue.enqueue(make_new_job(user_id="a", chat_id="c2", prompt="two"))).job
    b1 = (await queue.enqueue(make_new_job(user_id="b", chat_id="c1"))).job
    d1 = (await queue.enqueue(make_new_job(platform=DISCORD, user_id="a", chat_id="c1"))).job

    assert [j.id for j in await queue.history(TELEGRAM, "a")] == [a2.id, a1.id]
    assert [j.id for j in await queue.history(TELEGRAM, "a", limit=1)] == [a2.id]
    assert [j.id for j in await queue.history(DISCORD, "a")] == [d1.id]
    assert await queue.history(TELEGRAM, "nobody") == []

    last = await queue.last_job(TELEGRAM, "c1", "a")
    assert last is not None and last.id == a1.id
    assert await queue.last_job(TELEGRAM, "c3", "a") is None

    assert [j.id for j in await queue.active_jobs(TELEGRAM, "a")] == [a1.id, a2.id]
    # Fair order: a1, then b1 (b's first job comes before a's second).
    assert (await queue.claim_next("w")).id == a1.id  # type: ignore[union-attr]
    await finish(queue, a1.id)
    assert [j.id for j in await queue.active_jobs(TELEGRAM, "a")] == [a2.id]
    assert (await queue.claim_next("w")).id == b1.id  # type: ignore[union-attr]
    assert [j.id for j in await queue.running()] == [b1.id]
    assert [j.id for j in await queue.active_jobs(TELEGRAM, "b")] == [b1.id]


async def test_delivery_queries(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    tg = (await queue.enqueue(make_new_job())).job
    dc = (await queue.enqueue(make_new_job(platform=DISCORD, user_id="2"))).job
    first = await queue.claim_next("w")
    assert first is not None and first.id == tg.id

    await finish(queue, tg.id)
    await queue.cancel(dc.id)
    assert [j.id for j in await queue.pending_delivery([TELEGRAM])] == [tg.id]
    assert [j.id for j in await queue.pending_delivery([DISCORD])] == [dc.id]
    assert [j.id for j in await queue.pending_delivery([TELEGRAM, DISCORD])] == [
        tg.id,
        dc.id,
    ]

    timings = await queue.recent_step_times()
    assert [(j.id, j.step_seconds) for j in timings] == [(tg.id, 0.5)]


async def test_two_databases_on_one_file_see_each_others_jobs(
    db_url: str, queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    other_db = Database(db_url)
    try:
        other = JobQueue(other_db, LocalSignals(), max_attempts=2)
        job = (await queue.enqueue(make_new_job())).job
        claimed = await other.claim_next("other-host")
        assert claimed is not None and claimed.id == job.id
        assert (await queue.get(job.id)).claimed_by == "other-host"
    finally:
        await other_db.close()


async def test_a_reroll_of_an_unknown_job_is_refused(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    with pytest.raises(JobNotFound, match="no job 404"):
        await queue.enqueue(make_new_job(parent_id=404))
    assert await queue.queued_in_fair_order() == []


async def test_a_success_after_a_crash_clears_the_crash_error(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    await queue.claim_next("a")
    assert (await queue.requeue_after_crash(job.id, "died")).error == "died"
    await queue.claim_next("a")
    await finish(queue, job.id)
    done = await queue.get(job.id)
    assert (done.status, done.error, done.attempts) == (JobStatus.DONE, None, 1)


async def test_the_database_itself_allows_one_active_job_per_dedupe_key(
    database: Database, queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    """What keeps two hosts from both queueing a double-pressed button (their check-then-insert races)."""
    job = (await queue.enqueue(make_new_job(dedupe_key="k"))).job
    async with database.sessions() as session:
        row = await session.get(JobRow, job.id)
        assert row is not None
        copy = {c.key: getattr(row, c.key) for c in JobRow.__table__.columns if c.key != "id"}
        session.add(JobRow(**copy))
        with pytest.raises(IntegrityError):
            await session.flush()


async def test_release_puts_a_running_job_back_without_counting_an_attempt(
    queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    queued = (await queue.enqueue(make_new_job())).job
    claimed = await queue.claim_next("host-a")
    assert claimed is not None
    assert claimed.id == queued.id
    await queue.record_progress(queued.id, 2, 4)
    back = await queue.release(queued.id)
    assert (back.status, back.attempts, back.claimed_by, back.progress_step) == (JobStatus.QUEUED, 0, None, 0)
    with pytest.raises(InvalidTransition):
        await queue.release(queued.id)  # only a running job can be released
