"""The durable job queue: one method per operation, each returning domain objects from `storage.jobs`.

Every write runs in one `Database.write()` transaction: on SQLite that holds the write lock from its
first statement, so reading a row and then changing it cannot interleave with another writer (in this
process or another). On PostgreSQL the row is read ``FOR UPDATE`` and a claim is a conditional
``UPDATE ... WHERE status = 'queued'``, which is exactly-once under concurrent claimers as well.
Timestamps are taken inside the transaction, so their order is the commit order. An enqueue with a
per-user limit counts the user's active jobs and inserts in one transaction under a per-user lock
(SQLite's write lock; a transaction-scoped advisory lock on PostgreSQL), so bursts cannot get past it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.database import Database
from storage.fair_order import UserKey, Waiting, fair_order
from storage.jobs import (
    ALLOWED_TRANSITIONS,
    FINAL_STATUSES,
    EnqueueResult,
    FailureKind,
    ImageRequest,
    Job,
    JobStatus,
    NewJob,
    Platform,
    QueuePosition,
    RecoveryReport,
    Requester,
    StoredImage,
)
from storage.signals import JobSignals, Topic
from storage.tables import JobRow

logger = logging.getLogger(__name__)

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_FINAL = tuple(status.value for status in FINAL_STATUSES)


class JobNotFound(LookupError):
    """No job has that id."""


class InvalidTransition(RuntimeError):
    """The job is not in a status that allows this operation (e.g. finishing a cancelled job)."""


class ActiveLimitReached(Exception):
    """The requester already has `NewJob.max_active` queued or running jobs; nothing was queued."""

    def __init__(self, limit: int, active: Sequence[Job]) -> None:
        super().__init__(f"{len(active)} active jobs; the limit is {limit}")
        self.limit = limit
        self.active = tuple(active)


class JobQueue:
    """Enqueue, claim in fair order, record progress and outcomes, and answer questions about jobs.

    Every write that others may wait for calls ``signals.notify`` after its transaction commits.
    """

    def __init__(self, database: Database, signals: JobSignals, *, max_attempts: int) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}.")
        self._db = database
        self._signals = signals
        self._max_attempts = max_attempts

    # -- writing -------------------------------------------------------------------------------
    async def enqueue(self, new_job: NewJob) -> EnqueueResult:
        """Store a queued job. With a dedupe key that an active job already holds, return that job.

        With `max_active` set, raises ActiveLimitReached when the requester already has that many
        queued or running jobs. The check and the insert are one transaction that holds a per-user
        lock (SQLite: the write lock of BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory
        lock on the user), so any number of concurrent commands accept exactly the limit.
        """
        try:
            result = await self._enqueue_once(new_job)
        except IntegrityError:
            if new_job.dedupe_key is None:
                raise
            # Another host inserted the same dedupe key between our look and our insert (PostgreSQL;
            # SQLite's write lock rules this out). Its job is the one to return.
            result = await self._enqueue_once(new_job)
        if result.created:
            requester = result.job.requester
            logger.info(
                "queued job=%s platform=%s user=%s", result.job.id, requester.platform, requester.user_id
            )
            self._signals.notify(Topic.QUEUED)
        else:
            logger.info("duplicate request returns active job=%s", result.job.id)
        return result

    async def _enqueue_once(self, new_job: NewJob) -> EnqueueResult:
        async with self._db.write() as session:
            requester, request = new_job.requester, new_job.request
            await _lock_user(session, requester)
            if new_job.dedupe_key is not None:
                existing = await session.scalar(
                    select(JobRow)
                    .where(JobRow.dedupe_key == new_job.dedupe_key, JobRow.status.in_(_ACTIVE))
                    .limit(1)
                )
                if existing is not None:
                    return EnqueueResult(job=_to_job(existing), created=False)
            if new_job.max_active is not None:
                active = (await session.scalars(_active_query(requester.platform, requester.user_id))).all()
                if len(active) >= new_job.max_active:
                    raise ActiveLimitReached(new_job.max_active, [_to_job(row) for row in active])
            if new_job.parent_id is not None:
                await _load(session, new_job.parent_id)  # a reroll of a job that does not exist
            now = _now()
            row = JobRow(
                platform=requester.platform.value,
                chat_id=requester.chat_id,
                guild_id=requester.guild_id,
                user_id=requester.user_id,
                user_name=requester.user_name,
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                seed=request.seed,
                steps=request.steps,
                width=request.width,
                height=request.height,
                guidance=request.guidance,
                parent_id=new_job.parent_id,
                dedupe_key=new_job.dedupe_key,
                status=JobStatus.QUEUED.value,
                attempts=0,
                progress_step=0,
                progress_total=request.steps,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            await session.flush()
            return EnqueueResult(job=_to_job(row), created=True)

    async def claim_next(self, claimer: str) -> Job | None:
        """Atomically move the next job in fair order to running for `claimer`; None if none is queued.

        Safe with several claimers (tasks, processes or hosts) at once: each job is claimed once.
        Sets started_at, claimed_by, progress 0/steps.
        """
        # Claimers poll an often empty queue: look without the write lock first, so idle hosts never
        # hold up the chat side's writes.
        async with self._db.sessions() as session:
            any_queued = select(JobRow.id).where(JobRow.status == JobStatus.QUEUED.value).limit(1)
            if await session.scalar(any_queued) is None:
                return None
        async with self._db.write() as session:
            job = await _claim(session, claimer)
        if job is None:
            return None
        logger.info("claimed job=%s by %s (attempt %d)", job.id, claimer, job.attempts + 1)
        self._signals.notify(Topic.UPDATED)
        return job

    async def record_progress(self, job_id: int, step: int, total: int) -> bool:
        """Store step n of N for a running job. False if the job is no longer running (cancelled):
        the claim loop then stops the worker's run."""
        async with self._db.write() as session:
            result = await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value)
                .values(progress_step=step, progress_total=total, updated_at=_now())
                .returning(JobRow.id)
            )
            stored = result.scalar_one_or_none() is not None
            if not stored:
                await _load(session, job_id)  # raises JobNotFound for an unknown id
        if stored:
            self._signals.notify(Topic.UPDATED)
        return stored

    async def mark_done(
        self, job_id: int, image: StoredImage, *, duration_s: float, step_seconds: float
    ) -> Job:
        """running -> done, with the image's path and sha256 and the timings."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.DONE)
            _finish(row, JobStatus.DONE)
            row.error = None  # left by an earlier attempt that crashed; this one worked
            row.result_path = image.path
            row.result_sha256 = image.sha256
            row.duration_s = duration_s
            row.step_seconds = step_seconds
            row.progress_step = row.progress_total
            await session.flush()
            job = _to_job(row)
        self._signals.notify(Topic.UPDATED)
        logger.info("done job=%s in %.1fs (%.2fs/step)", job.id, duration_s, step_seconds)
        return job

    async def mark_failed(self, job_id: int, kind: FailureKind, error: str) -> Job:
        """running -> failed with a reason meant for people (the chat side words it for users)."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.FAILED)
            _finish(row, JobStatus.FAILED)
            row.failure_kind = kind.value
            row.error = error
            await session.flush()
            job = _to_job(row)
        self._signals.notify(Topic.UPDATED)
        logger.warning("failed job=%s kind=%s: %s", job.id, kind.value, error)
        return job

    async def requeue_after_crash(self, job_id: int, reason: str) -> Job:
        """The worker died under this job: back to queued with attempts + 1, or failed (WORKER_DIED)
        once attempts reach max_attempts."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.QUEUED)
            job = self._after_crash(row, reason)
            await session.flush()
        self._signals.notify(Topic.QUEUED if job.status is JobStatus.QUEUED else Topic.UPDATED)
        return job

    async def release(self, job_id: int) -> Job:
        """running -> queued without counting an attempt: the engine stopped on purpose (a clean
        shutdown or restart), so nothing is wrong with the job and it keeps its place."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.QUEUED)
            row.status = JobStatus.QUEUED.value
            row.claimed_by = None
            row.progress_step = 0
            row.updated_at = _now()
            await session.flush()
            job = _to_job(row)
        logger.info("released job=%s back to the queue (engine stopping)", job.id)
        self._signals.notify(Topic.QUEUED)
        return job

    async def cancel(self, job_id: int) -> Job:
        """queued or running -> cancelled. A final job is returned unchanged (cancel is idempotent)."""
        async with self._db.write() as session:
            row = await _load(session, job_id, for_update=True)
            if JobStatus(row.status).is_final:
                return _to_job(row)
            _finish(row, JobStatus.CANCELLED)
            await session.flush()
            job = _to_job(row)
        logger.info("cancelled job=%s", job.id)
        self._signals.notify(Topic.UPDATED)
        return job

    async def mark_delivered(self, job_id: int, *, result_message_id: str | None = None) -> Job:
        """Record that the chat side has posted the outcome; never delivered again after this."""
        async with self._db.write() as session:
            row = await _load(session, job_id, for_update=True)
            if row.delivered_at is not None:
                return _to_job(row)
            if not JobStatus(row.status).is_final:
                raise InvalidTransition(
                    f"Job {job_id} is {row.status}: only a finished job can be marked delivered; "
                    "wait until it is done, failed or cancelled."
                )
            now = _now()
            row.delivered_at = now
            row.updated_at = now
            if result_message_id is not None:
                row.result_message_id = result_message_id
            await session.flush()
            job = _to_job(row)
        logger.info("delivered job=%s", job.id)
        self._signals.notify(Topic.UPDATED)
        return job

    async def set_status_message(self, job_id: int, message_id: str) -> None:
        """Remember the platform message that shows this job's queue position and progress."""
        async with self._db.write() as session:
            row = await _load(session, job_id, for_update=True)
            row.status_message_id = message_id
            row.updated_at = _now()

    async def recover(self, claimer: str | None = None) -> RecoveryReport:
        """At startup: jobs left running (by `claimer`, or by anyone when None) go back to queued with
        attempts + 1, or fail past max_attempts; also lists finished jobs never delivered.

        Jobs failed here are final and undelivered, so they are listed in `undelivered` as well.
        """
        async with self._db.write() as session:
            query = select(JobRow).where(JobRow.status == JobStatus.RUNNING.value).order_by(JobRow.id)
            if claimer is not None:
                query = query.where(JobRow.claimed_by == claimer)
            left_running = (await session.scalars(query.with_for_update())).all()
            reason = "The engine stopped while this job was running (the bot was restarted or crashed)."
            moved = [self._after_crash(row, reason) for row in left_running]
            await session.flush()
            undelivered = await session.scalars(
                select(JobRow)
                .where(JobRow.status.in_(_FINAL), JobRow.delivered_at.is_(None))
                .order_by(JobRow.id)
            )
            report = RecoveryReport(
                requeued=tuple(job for job in moved if job.status is JobStatus.QUEUED),
                failed=tuple(job for job in moved if job.status is JobStatus.FAILED),
                undelivered=tuple(_to_job(row) for row in undelivered),
            )
        counts = (len(report.requeued), len(report.failed), len(report.undelivered))
        logger.info("recovery: %d requeued, %d failed, %d undelivered", *counts)
        if report.requeued:
            self._signals.notify(Topic.QUEUED)
        if report.failed or report.undelivered:
            self._signals.notify(Topic.UPDATED)
        return report

    def _after_crash(self, row: JobRow, reason: str) -> Job:
        """running -> queued (attempts + 1), or -> failed once attempts reach max_attempts."""
        row.attempts += 1
        row.updated_at = _now()
        row.claimed_by = None
        if row.attempts >= self._max_attempts:
            _finish(row, JobStatus.FAILED)
            row.failure_kind = FailureKind.WORKER_DIED.value
            row.error = f"{reason} It was tried {row.attempts} times."
            logger.warning("failed job=%s after %d attempts: %s", row.id, row.attempts, reason)
        else:
            row.status = JobStatus.QUEUED.value
            row.error = reason
            row.progress_step = 0
            logger.warning("requeued job=%s (attempt %d failed): %s", row.id, row.attempts, reason)
        return _to_job(row)

    async def images_to_expire(self, finished_before: datetime, limit: int = 500) -> Sequence[Job]:
        """Done and delivered jobs finished before `finished_before` that still have an image, oldest
        first. Jobs not delivered yet are never listed: their picture still has to be posted."""
        return await self._select(
            select(JobRow)
            .where(
                JobRow.status == JobStatus.DONE.value,
                JobRow.result_path.is_not(None),
                JobRow.delivered_at.is_not(None),
                JobRow.finished_at < finished_before,
            )
            .order_by(JobRow.finished_at, JobRow.id)
            .limit(limit)
        )

    async def forget_images(self, job_ids: Sequence[int]) -> None:
        """Clear the image data (path and sha256) of these jobs once their files are deleted; a job's
        buttons then say its picture expired."""
        if not job_ids:
            return
        async with self._db.write() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(list(job_ids)), JobRow.delivered_at.is_not(None))
                .values(result_path=None, result_sha256=None)
            )

    # -- reading -------------------------------------------------------------------------------
    async def get(self, job_id: int) -> Job:
        """The job with this id; raises JobNotFound."""
        async with self._db.sessions() as session:
            return _to_job(await _load(session, job_id))

    async def queued_in_fair_order(self) -> Sequence[Job]:
        """All queued jobs in the order they will be claimed (round-robin between users: among users
        with queued jobs, the one whose last job started longest ago goes first; FIFO within a user)."""
        async with self._db.sessions() as session:
            return await _queued_in_fair_order(session)

    async def running(self) -> Sequence[Job]:
        """Running jobs, the earliest started first."""
        async with self._db.sessions() as session:
            return await _running(session)

    async def position(self, job_id: int) -> QueuePosition | None:
        """Where a queued job stands in fair order; None if it is not queued."""
        async with self._db.sessions() as session:
            queued = await _queued_in_fair_order(session)
            for index, job in enumerate(queued):
                if job.id == job_id:
                    return QueuePosition(
                        position=index + 1,
                        jobs_ahead=tuple(queued[:index]),
                        running=tuple(await _running(session)),
                    )
        return None

    async def history(self, platform: Platform, user_id: str, limit: int = 10) -> Sequence[Job]:
        """A user's most recent jobs on a platform, newest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}.")
        return await self._select(
            select(JobRow)
            .where(JobRow.platform == platform.value, JobRow.user_id == user_id)
            .order_by(JobRow.created_at.desc(), JobRow.id.desc())
            .limit(limit)
        )

    async def last_job(self, platform: Platform, chat_id: str, user_id: str) -> Job | None:
        """The user's most recent job in this chat (for /reroll)."""
        jobs = await self._select(
            select(JobRow)
            .where(JobRow.platform == platform.value, JobRow.chat_id == chat_id, JobRow.user_id == user_id)
            .order_by(JobRow.created_at.desc(), JobRow.id.desc())
            .limit(1)
        )
        return jobs[0] if jobs else None

    async def active_jobs(self, platform: Platform, user_id: str) -> Sequence[Job]:
        """The user's queued and running jobs, oldest first (for /cancel and /queue)."""
        return await self._select(_active_query(platform, user_id))

    async def pending_delivery(self, platforms: Sequence[Platform]) -> Sequence[Job]:
        """Jobs of these platforms that are final but not delivered, oldest first."""
        return await self._select(
            select(JobRow)
            .where(
                JobRow.delivered_at.is_(None),
                JobRow.status.in_(_FINAL),
                JobRow.platform.in_([platform.value for platform in platforms]),
            )
            .order_by(JobRow.id)
        )

    async def changed_since(self, platforms: Sequence[Platform], since: datetime) -> Sequence[Job]:
        """Jobs of these platforms whose row changed after `since` (for progress delivery).

        Oldest change first, so the last job's `updated_at` is the next call's `since`. On SQLite rows
        commit in `updated_at` order; with PostgreSQL and several hosts a caller should re-read a
        second or so of overlap, since a slower transaction may commit an older timestamp later.
        """
        return await self._select(
            select(JobRow)
            .where(
                JobRow.updated_at > since,
                JobRow.platform.in_([platform.value for platform in platforms]),
            )
            .order_by(JobRow.updated_at, JobRow.id)
        )

    async def recent_step_times(self, limit: int = 50) -> Sequence[Job]:
        """The most recent done jobs with step timings, newest first (for ETAs)."""
        return await self._select(
            select(JobRow)
            .where(JobRow.status == JobStatus.DONE.value, JobRow.step_seconds.is_not(None))
            .order_by(JobRow.finished_at.desc(), JobRow.id.desc())
            .limit(limit)
        )

    async def _select(self, query: Any) -> list[Job]:
        async with self._db.sessions() as session:
            return [_to_job(row) for row in await session.scalars(query)]


# -- helpers shared by reads and writes ----------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


def _active_query(platform: Platform, user_id: str) -> Select[JobRow]:
    return (
        select(JobRow)
        .where(JobRow.platform == platform.value, JobRow.user_id == user_id, JobRow.status.in_(_ACTIVE))
        .order_by(JobRow.created_at, JobRow.id)
    )


async def _lock_user(session: AsyncSession, requester: Requester) -> None:
    """Serialise this transaction with every other one that locks the same user, until it ends.

    SQLite needs nothing more: a write transaction holds the database's write lock from BEGIN
    IMMEDIATE. PostgreSQL's READ COMMITTED would let two transactions both count the same active jobs,
    so they take a transaction-scoped advisory lock keyed on the user.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = f"majicbot-user:{requester.platform.value}:{requester.user_id}"
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


async def _load(session: AsyncSession, job_id: int, *, for_update: bool = False) -> JobRow:
    query = select(JobRow).where(JobRow.id == job_id)
    if for_update:
        query = query.with_for_update()
    row = await session.scalar(query, execution_options={"populate_existing": True})
    if row is None:
        raise JobNotFound(f"There is no job {job_id}; check the number (see /history for yours).")
    return row


async def _load_to_move(session: AsyncSession, job_id: int, target: JobStatus) -> JobRow:
    """The job's row, locked, if its status may become `target`; else InvalidTransition."""
    row = await _load(session, job_id, for_update=True)
    current = JobStatus(row.status)
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(
            f"Job {job_id} is {current.value}, so it cannot become {target.value}; "
            "re-read the job and act on its current status."
        )
    return row


def _finish(row: JobRow, status: JobStatus) -> None:
    now = _now()
    row.status = status.value
    row.finished_at = now
    row.updated_at = now


async def _claim(session: AsyncSession, claimer: str) -> Job | None:
    for job_id in await _fair_ids(session):
        now = _now()
        # Conditional on still being queued: on PostgreSQL another host may have claimed it since we
        # read the order; then the next one in order is tried. On SQLite the write lock makes the
        # first candidate succeed.
        claimed = await session.scalar(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED.value)
            .values(
                status=JobStatus.RUNNING.value,
                started_at=now,
                updated_at=now,
                claimed_by=claimer,
                progress_step=0,
                progress_total=JobRow.steps,
            )
            .returning(JobRow),
            execution_options={"populate_existing": True},
        )
        if claimed is not None:
            return _to_job(claimed)
    return None


async def _fair_ids(session: AsyncSession) -> list[int]:
    queued = (
        await session.execute(
            select(JobRow.id, JobRow.platform, JobRow.user_id).where(JobRow.status == JobStatus.QUEUED.value)
        )
    ).all()
    if not queued:
        return []
    waiting_users = (
        select(JobRow.platform, JobRow.user_id)
        .where(JobRow.status == JobStatus.QUEUED.value)
        .distinct()
        .subquery()
    )
    last_started_rows = await session.execute(
        select(JobRow.platform, JobRow.user_id, func.max(JobRow.started_at))
        .join(
            waiting_users,
            and_(JobRow.platform == waiting_users.c.platform, JobRow.user_id == waiting_users.c.user_id),
        )
        .where(JobRow.started_at.is_not(None))
        .group_by(JobRow.platform, JobRow.user_id)
    )
    last_started: dict[UserKey, datetime] = {
        (platform, user_id): started for platform, user_id, started in last_started_rows if started
    }
    return fair_order(
        (Waiting(job_id=job_id, user=(platform, user_id)) for job_id, platform, user_id in queued),
        last_started,
    )


async def _queued_in_fair_order(session: AsyncSession) -> list[Job]:
    order = await _fair_ids(session)
    rows = await session.scalars(select(JobRow).where(JobRow.status == JobStatus.QUEUED.value))
    by_id = {row.id: row for row in rows}
    # A row claimed between the two reads (deferred read on another connection) is simply left out.
    return [_to_job(by_id[job_id]) for job_id in order if job_id in by_id]


async def _running(session: AsyncSession) -> list[Job]:
    rows = await session.scalars(
        select(JobRow).where(JobRow.status == JobStatus.RUNNING.value).order_by(JobRow.started_at, JobRow.id)
    )
    return [_to_job(row) for row in rows]


def _to_job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        requester=Requester(
            platform=Platform(row.platform),
            chat_id=row.chat_id,
            user_id=row.user_id,
            user_name=row.user_name,
            guild_id=row.guild_id,
        ),
        request=ImageRequest(
            prompt=row.prompt,
            seed=row.seed,
            steps=row.steps,
            width=row.width,
            height=row.height,
            guidance=row.guidance,
            negative_prompt=row.negative_prompt,
        ),
        parent_id=row.parent_id,
        status=JobStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        delivered_at=row.delivered_at,
        progress_step=row.progress_step,
        progress_total=row.progress_total,
        error=row.error,
        failure_kind=FailureKind(row.failure_kind) if row.failure_kind is not None else None,
        result_path=row.result_path,
        result_sha256=row.result_sha256,
        duration_s=row.duration_s,
        step_seconds=row.step_seconds,
        claimed_by=row.claimed_by,
        status_message_id=row.status_message_id,
        result_message_id=row.result_message_id,
        dedupe_key=row.dedupe_key,
        updated_at=row.updated_at,
    )
