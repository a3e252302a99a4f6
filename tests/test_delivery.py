"""DeliveryLoop against a real SQLite queue, with a presenter that records what it was asked to show."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from bot.delivery import DeliveryLoop
from bot.discord import DISCORD
from bot.job_view import JobView
from bot.telegram import TELEGRAM
from storage.database import Database
from storage.images import ImageStore
from storage.jobs import FailureKind, Job, JobStatus
from storage.queue import JobQueue
from storage.signals import LocalSignals, Topic
from storage.tables import JobRow
from tests.support.memory_frontend import WAIT_S, RecordingPresenter
from tests.support.new_jobs import NewJobFactory

pytestmark = pytest.mark.all_databases


@contextlib.asynccontextmanager
async def running(loop: DeliveryLoop) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await task


async def wait_delivered(queue: JobQueue, signals: LocalSignals, job_id: int) -> Job:
    """Until the row says delivered (bounded); mark_delivered signals UPDATED, the timeout is a backstop."""
    async with asyncio.timeout(WAIT_S):
        while (job := await queue.get(job_id)).delivered_at is None:
            await signals.wait(Topic.UPDATED, 0.05)
    return job


async def finished_job(
    queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory, **kwargs: object
) -> Job:
    job = (await queue.enqueue(make_new_job(**kwargs))).job  # type: ignore[arg-type]
    claimed = await queue.claim_next("test")
    assert claimed is not None and claimed.id == job.id
    stored = await image_store.save(job.id, job.request.seed, b"png")
    return await queue.mark_done(job.id, stored, duration_s=2.0, step_seconds=0.25)


def make_loop(
    queue: JobQueue, signals: LocalSignals, *presenters: RecordingPresenter, **kwargs: object
) -> DeliveryLoop:
    options: dict[str, object] = {"poll_interval_s": 0.05, "retry_backoff_s": (0.01, 0.05)}
    options.update(kwargs)
    return DeliveryLoop(queue, signals, list(presenters), **options)  # type: ignore[arg-type]


async def test_done_job_is_delivered_once(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter()
    loop = make_loop(queue, signals, presenter)
    done = await finished_job(queue, image_store, make_new_job)
    await loop.run_once()
    delivered = await queue.get(done.id)
    assert delivered.delivered_at is not None
    assert delivered.result_message_id == f"message-{done.id}"
    await loop.run_once()
    await loop.run_once()
    assert [c.kind for c in presenter.calls] == ["deliver", "clean_up"]


async def test_delivered_once_across_a_restart_of_the_loop(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    first_presenter = RecordingPresenter()
    async with running(make_loop(queue, signals, first_presenter)):
        first = await finished_job(queue, image_store, make_new_job)
        await wait_delivered(queue, signals, first.id)
    # Finished while no loop ran (the chat process was down): the next loop delivers it, only it.
    second = await finished_job(queue, image_store, make_new_job, user_id="2")
    second_presenter = RecordingPresenter()
    async with running(make_loop(queue, signals, second_presenter)):
        await wait_delivered(queue, signals, second.id)
    # (The first loop may also have shown the jobs' progress while they ran.)
    assert [c.job_id for c in first_presenter.of("deliver")] == [first.id]
    assert [c.job_id for c in second_presenter.of("deliver")] == [second.id]


async def test_failure_and_cancel_are_reported(
    queue: JobQueue, signals: LocalSignals, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter()
    failing = (await queue.enqueue(make_new_job(prompt="fails"))).job
    assert await queue.claim_next("test") is not None
    await queue.mark_failed(failing.id, FailureKind.OUT_OF_MEMORY, "CUDA out of memory")
    cancelled = (await queue.enqueue(make_new_job(prompt="cancelled", user_id="2"))).job
    await queue.cancel(cancelled.id)
    await make_loop(queue, signals, presenter).run_once()
    assert [(c.kind, c.job_id, c.status) for c in presenter.calls if c.kind != "clean_up"] == [
        ("failure", failing.id, JobStatus.FAILED),
        ("cancelled", cancelled.id, JobStatus.CANCELLED),
    ]
    assert (await queue.get(failing.id)).delivered_at is not None
    assert (await queue.get(cancelled.id)).delivered_at is not None


async def test_a_failing_presenter_is_retried_and_others_go_on(
    queue: JobQueue,
    signals: LocalSignals,
    image_store: ImageStore,
    make_new_job: NewJobFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    telegram = RecordingPresenter(failures=2)
    discord = RecordingPresenter(platform=DISCORD)
    flaky = await finished_job(queue, image_store, make_new_job)
    steady = await finished_job(queue, image_store, make_new_job, platform=DISCORD)
    with caplog.at_level(logging.WARNING, logger="bot.delivery"):
        async with running(make_loop(queue, signals, telegram, discord)):
            await wait_delivered(queue, signals, steady.id)
            await wait_delivered(queue, signals, flaky.id)
    assert len(telegram.of("deliver", flaky.id)) == 3
    assert len(discord.of("deliver", steady.id)) == 1
    failures = [r.getMessage() for r in caplog.records if "delivering failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(message.endswith(f"job={flaky.id}") for message in failures)


async def test_keeps_trying_until_the_deadline_then_points_to_show(
    queue: JobQueue,
    signals: LocalSignals,
    image_store: ImageStore,
    make_new_job: NewJobFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    presenter = RecordingPresenter(failures=10_000)
    job = await finished_job(queue, image_store, make_new_job)
    loop = make_loop(queue, signals, presenter, give_up_after_s=0.5)
    with caplog.at_level(logging.WARNING, logger="bot.delivery"):
        async with running(loop):
            delivered = await wait_delivered(queue, signals, job.id)
    # Tried many times (not a fixed small count), then the user was told to use /show, once.
    assert len(presenter.of("deliver")) > 5
    assert len(presenter.of("ready_later", job.id)) == 1
    assert delivered.result_message_id is None
    gave_up = [r for r in caplog.records if r.levelno == logging.ERROR and "gave up" in r.getMessage()]
    assert len(gave_up) == 1 and gave_up[0].getMessage().endswith(f"job={job.id}")


async def test_an_outage_shorter_than_the_deadline_loses_nothing(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter(failures=40)
    job = await finished_job(queue, image_store, make_new_job)
    async with running(make_loop(queue, signals, presenter, retry_backoff_s=(0.001, 0.01))):
        delivered = await wait_delivered(queue, signals, job.id)
    assert len(presenter.of("deliver")) == 41
    assert presenter.of("ready_later") == []
    assert delivered.result_message_id == f"message-{job.id}"


async def test_a_failed_cleanup_never_posts_the_image_again(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter(cleanup_fails=True)
    job = await finished_job(queue, image_store, make_new_job)
    loop = make_loop(queue, signals, presenter)
    await loop.run_once()
    await loop.run_once()
    assert (await queue.get(job.id)).delivered_at is not None
    assert [c.kind for c in presenter.calls] == ["deliver", "clean_up"]


async def test_a_hanging_presenter_times_out_and_is_retried(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter(hang=True)
    job = await finished_job(queue, image_store, make_new_job)
    async with running(make_loop(queue, signals, presenter, call_timeout_s=0.05)):
        await presenter.wait_until(lambda: len(presenter.of("deliver")) >= 2)
        presenter.hang = False
        await wait_delivered(queue, signals, job.id)


async def test_a_hanging_cleanup_holds_up_no_image(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter(cleanup_hangs=True)
    first = await finished_job(queue, image_store, make_new_job)
    second = await finished_job(queue, image_store, make_new_job)  # the same chat
    loop = make_loop(queue, signals, presenter, cleanup_timeout_s=60.0, call_timeout_s=0.5)
    async with running(loop):
        await wait_delivered(queue, signals, first.id)
        await wait_delivered(queue, signals, second.id)
    assert len(presenter.of("deliver")) == 2


async def test_progress_for_positions_and_steps(
    queue: JobQueue, signals: LocalSignals, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter()
    loop = make_loop(queue, signals, presenter)
    first = (await queue.enqueue(make_new_job(user_id="1"))).job
    second = (await queue.enqueue(make_new_job(user_id="2"))).job
    await loop.run_once()
    assert [(c.job_id, c.status) for c in presenter.of("progress")] == [
        (first.id, JobStatus.QUEUED),
        (second.id, JobStatus.QUEUED),
    ]
    await loop.run_once()  # nothing changed: nothing shown
    assert len(presenter.of("progress")) == 2

    assert await queue.claim_next("test") is not None  # first runs; second moves up to position 1
    await loop.run_once()
    assert [(c.job_id, c.status, c.step) for c in presenter.of("progress")[2:]] == [
        (first.id, JobStatus.RUNNING, 0),
        (second.id, JobStatus.QUEUED, 0),
    ]
    await queue.record_progress(first.id, 1, 4)
    await loop.run_once()
    await queue.record_progress(first.id, 2, 4)
    await loop.run_once()
    await loop.run_once()
    steps = [c.step for c in presenter.of("progress", first.id)]
    assert steps == [0, 0, 1, 2]


async def test_eta_is_passed_once_timings_are_known(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter()
    await finished_job(queue, image_store, make_new_job)  # 4 steps x 0.25 s + 1 s
    waiting = (await queue.enqueue(make_new_job())).job
    await make_loop(queue, signals, presenter).run_once()
    (call,) = presenter.of("progress", waiting.id)
    assert call.eta_s == pytest.approx(2.0)


async def test_only_platforms_with_a_presenter_are_served(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter(platform=TELEGRAM)
    discord_job = await finished_job(queue, image_store, make_new_job, platform=DISCORD)
    await queue.enqueue(make_new_job(platform=DISCORD, user_id="2"))
    await make_loop(queue, signals, presenter).run_once()
    assert presenter.calls == []
    assert (await queue.get(discord_job.id)).delivered_at is None


class ObservedSignals(LocalSignals):
    """LocalSignals that tell the test when someone has started waiting for UPDATED."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, topic: Topic, timeout: float) -> bool:  # noqa: ASYNC109 (the protocol's)
        if topic is Topic.UPDATED:
            self.waiting.set()  # set before the wait below registers, with no await in between
        return await super().wait(topic, timeout)


async def test_wakes_on_the_updated_signal(
    database: Database, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    signals = ObservedSignals()
    queue = JobQueue(database, signals, max_attempts=2)
    presenter = RecordingPresenter()
    job = (await queue.enqueue(make_new_job())).job
    assert await queue.claim_next("test") is not None
    stored = await image_store.save(job.id, job.request.seed, b"png")
    # A poll interval far longer than the wait: only the signal can deliver in time.
    async with running(make_loop(queue, signals, presenter, poll_interval_s=60.0)):
        async with asyncio.timeout(WAIT_S):
            await signals.waiting.wait()
        # Whether the first pass is still reading or already waiting, the signal must wake a pass.
        await queue.mark_done(job.id, stored, duration_s=1.0, step_seconds=0.25)
        await wait_delivered(queue, signals, job.id)
    assert [c.job_id for c in presenter.of("deliver")] == [job.id]


async def test_an_update_written_during_a_pass_wakes_the_next_one(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    job = (await queue.enqueue(make_new_job())).job
    assert await queue.claim_next("test") is not None
    stored = await image_store.save(job.id, job.request.seed, b"png")

    class FinishesWhileShown(RecordingPresenter):
        async def show_progress(self, view: JobView) -> None:
            await super().show_progress(view)
            # The claim loop finishing the job while this pass is still busy posting.
            await queue.mark_done(view.job.id, stored, duration_s=1.0, step_seconds=0.25)

    presenter = FinishesWhileShown()
    async with running(make_loop(queue, signals, presenter, poll_interval_s=60.0)):
        await wait_delivered(queue, signals, job.id)
    assert [c.kind for c in presenter.calls] == ["progress", "deliver", "clean_up"]


async def test_two_chat_processes_on_one_platform_post_each_result_once(
    db_url: str, queue: JobQueue, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    """Two delivery loops, each with its own connections and name, as two chat processes would be."""
    presenters = [RecordingPresenter(), RecordingPresenter()]
    databases = [Database(db_url), Database(db_url)]
    try:
        loops = [
            make_loop(JobQueue(db, LocalSignals(), max_attempts=2), LocalSignals(), presenter, deliverer=name)
            for db, presenter, name in zip(databases, presenters, ("chat-a", "chat-b"), strict=True)
        ]
        jobs = [await finished_job(queue, image_store, make_new_job, user_id=str(n)) for n in range(8)]
        waiting = (await queue.enqueue(make_new_job(user_id="w"))).job
        for _ in range(3):
            await asyncio.gather(*(loop.run_once() for loop in loops))
        posts = [call.job_id for presenter in presenters for call in presenter.of("deliver")]
        assert sorted(posts) == sorted(job.id for job in jobs), "every result posted once, by one of them"
        shown = [call.job_id for presenter in presenters for call in presenter.of("progress")]
        assert shown == [waiting.id], "one process shows a job's progress"
    finally:
        for db in databases:
            await db.close()


async def test_a_dead_chat_process_s_jobs_are_taken_over_after_its_lease(
    db_url: str, queue: JobQueue, database: Database, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    dead, alive = RecordingPresenter(), RecordingPresenter()
    job = (await queue.enqueue(make_new_job())).job
    await make_loop(queue, LocalSignals(), dead, deliverer="chat-dead").run_once()
    assert [c.job_id for c in dead.of("progress")] == [job.id]
    # chat-dead is gone without giving its claim back: until its lease runs out, nobody else posts.
    survivor = make_loop(queue, LocalSignals(), alive, deliverer="chat-alive")
    assert await queue.claim_next("engine") is not None
    stored = await image_store.save(job.id, job.request.seed, b"png")
    await queue.mark_done(job.id, stored, duration_s=1.0, step_seconds=0.25)
    await survivor.run_once()
    assert alive.calls == []
    async with database.write() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.id == job.id)
            .values(delivery_lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        )
    await survivor.run_once()
    assert [c.job_id for c in alive.of("deliver")] == [job.id]
    assert (await queue.get(job.id)).delivered_at is not None


async def test_failed_attempts_are_stored_in_the_row(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter(failures=1)
    job = await finished_job(queue, image_store, make_new_job)
    await make_loop(queue, signals, presenter, retry_backoff_s=(60.0, 60.0)).run_once()
    stored = await queue.get(job.id)
    assert stored.delivered_at is None
    assert stored.delivery_attempts == 1
    assert stored.delivery_error is not None and "the platform is down" in stored.delivery_error
    assert stored.delivery_retry_at is not None
    # A restarted chat process (a new loop, nothing in memory) respects the stored pause.
    await make_loop(queue, signals, presenter).run_once()
    assert len(presenter.of("deliver")) == 1


async def test_failures_retries_and_giving_up_reach_the_metrics(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    class Counted:
        def __init__(self) -> None:
            self.calls: list[tuple[str, bool]] = []

        def delivery_failed(self, platform: str, *, gave_up: bool) -> None:
            self.calls.append((platform, gave_up))

    metrics = Counted()
    presenter = RecordingPresenter(failures=2)
    job = await finished_job(queue, image_store, make_new_job)
    async with running(make_loop(queue, signals, presenter, metrics=metrics)):
        await wait_delivered(queue, signals, job.id)
    assert metrics.calls == [("telegram", False), ("telegram", False)]
    # Past delivery.retry_for_s (here at once): given up, counted as such.
    given_up = Counted()
    stubborn = RecordingPresenter(failures=100)
    later = await finished_job(queue, image_store, make_new_job)
    async with running(make_loop(queue, signals, stubborn, give_up_after_s=0.0, metrics=given_up)):
        await wait_delivered(queue, signals, later.id)
    assert given_up.calls == [("telegram", True)]


async def test_jobs_with_progress_turned_off_get_only_their_outcome(
    queue: JobQueue, signals: LocalSignals, image_store: ImageStore, make_new_job: NewJobFactory
) -> None:
    presenter = RecordingPresenter()
    loop = make_loop(queue, signals, presenter)
    quiet = (await queue.enqueue(dataclasses.replace(make_new_job(user_id="1"), show_progress=False))).job
    shown = (await queue.enqueue(make_new_job(user_id="2"))).job
    await loop.run_once()
    claimed = await queue.claim_next("test")
    assert claimed is not None and claimed.id == quiet.id
    await queue.record_progress(quiet.id, 2, 4)
    await loop.run_once()
    assert {c.job_id for c in presenter.of("progress")} == {shown.id}
    stored = await image_store.save(quiet.id, quiet.request.seed, b"png")
    await queue.mark_done(quiet.id, stored, duration_s=2.0, step_seconds=0.25)
    await loop.run_once()
    assert [c.kind for c in presenter.calls if c.job_id == quiet.id] == ["deliver", "clean_up"]
