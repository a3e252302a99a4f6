"""The durable job queue: one method per operation, each returning domain objects from `storage.jobs`.

Every write runs in one `Database.write()` transaction: on SQLite that holds the write lock from its
first statement, so reading a row and then changing it cannot interleave with another writer (in this
process or another). On PostgreSQL the row is read ``FOR UPDATE`` and a claim is a conditional
``UPDATE ... WHERE status = 'queued'``, which is exactly-once under concurrent claimers as well.
Timestamps are taken inside the transaction, so their order is the commit order; on PostgreSQL they
come from the database's clock, so hosts whose clocks differ still agree on leases and on order.

Leases: a claim sets ``lease_expires_at`` and increments ``claim_count``; the engine renews the lease
while it works (`renew_lease`, and every progress write). A claimer that finds a running job past its
lease takes it back (counting an attempt) before it claims. Writes from an engine carry the claim
number they got (``claim=``): one that is no longer the latest is refused with `LeaseLost`, so a stalled
engine that wakes up can never overwrite the work of the one that took its job over.

Fair order is kept in `user_turns` (one row per user: when their last job started, their oldest queued
job), updated by every write that changes who has what queued, so a claim is a few index lookups
whatever the length of the queue.

An enqueue checks the user's ban, their active jobs (`max_active`) and their jobs of the last hour
(`max_per_hour`) and inserts in one transaction under a per-user lock (SQLite's write lock; a
transaction-scoped advisory lock on PostgreSQL), so bursts cannot get past the limits and a ban holds
from the moment it commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.bans import UserBanned, find_ban
from storage.clock import database_now, dialect_name
from storage.database import Database
from storage.fair_order import UserKey, Waiting, fair_order
from storage.jobs import (
    ALLOWED_TRANSITIONS,
    FINAL_STATUSES,
    EnqueueResult,
    FailureKind,
    ImageRequest,
    Job,
    JobOrigin,
    JobStatus,
    NewJob,
    Platform,
    QueuePosition,
    RecoveryReport,
    Requester,
    StoredImage,
)
from storage.signals import JobSignals, Topic
from storage.tables import NEVER_STARTED, JobInputRow, JobRow, UserTurnRow

logger = logging.getLogger(__name__)

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
HOUR = timedelta(hours=1)
CLAIM_LOCK_KEY = 0x6D616A6964  # the PostgreSQL advisory lock that serialises claims
_FINAL = tuple(status.value for status in FINAL_STATUSES)


class JobNotFound(LookupError):
    """No job has that id."""


class InvalidTransition(RuntimeError):
    """The job is not in a status that allows this operation (e.g. finishing a cancelled job)."""


class LeaseLost(InvalidTransition):
    """The writer's claim on a job is no longer the latest: its lease ran out and it was taken over."""


class ActiveLimitReached(Exception):
    """The requester already has `NewJob.max_active` queued or running jobs; nothing was queued."""

    def __init__(self, limit: int, active: Sequence[Job]) -> None:
        super().__init__(f"{len(active)} active jobs; the limit is {limit}")
        self.limit = limit
        self.active = tuple(active)


class HourlyLimitReached(Exception):
    """The requester already submitted `NewJob.max_per_hour` jobs in the last hour; nothing was queued."""

    def __init__(self, limit: int, retry_at: datetime) -> None:
        super().__init__(f"{limit} jobs in the last hour; the next one is accepted from {retry_at}")
        self.limit = limit
        self.retry_at = retry_at  # when the oldest of those jobs leaves the window


class JobQueue:
    """Enqueue, claim in fair order, record progress and outcomes, and answer questions about jobs.

    Every write that others may wait for calls ``signals.notify`` after its transaction commits.
    """

    def __init__(
        self, database: Database, signals: JobSignals, *, max_attempts: int, lease_s: float = 30.0
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}.")
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, not {lease_s}.")
        self._db = database
        self._signals = signals
        self._max_attempts = max_attempts
        self._lease = timedelta(seconds=lease_s)

    @property
    def database(self) -> Database:
        """The database the queue is on (the other stores of the chat side share it)."""
        return self._db

    @property
    def lease_s(self) -> float:
        """How long a claim stays valid without renewal."""
        return self._lease.total_seconds()

    # -- writing -------------------------------------------------------------------------------
    async def enqueue(self, new_job: NewJob) -> EnqueueResult:
        """Store a queued job. With a dedupe key that an active job already holds, return that job.

        Raises UserBanned for a banned requester. With `max_active` set, raises ActiveLimitReached
        when the requester already has that many queued or running jobs; with `max_per_hour` set,
        HourlyLimitReached when they submitted that many in the last hour. The checks and the insert
        are one transaction that holds a per-user lock (SQLite: the write lock of BEGIN IMMEDIATE;
        PostgreSQL: a transaction-scoped advisory lock on the user), so any number of concurrent
        commands accept exactly the limit.
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
            ban = await find_ban(session, requester.platform, requester.user_id)
            if ban is not None:
                raise UserBanned(ban)
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
            now = await database_now(session)
            if new_job.max_per_hour is not None:
                await _check_hourly(session, requester, new_job.max_per_hour, now)
            if new_job.parent_id is not None:
                await _load(session, new_job.parent_id)  # a reroll of a job that does not exist
            png = new_job.input_png
            input_sha256 = None if png is None else hashlib.sha256(png).hexdigest()
            row = JobRow(
                platform=requester.platform,
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
                parent_image_index=new_job.parent_image_index,
                origin=new_job.origin.value,
                image_count=request.count,
                strength=request.strength,
                input_sha256=input_sha256,
                dedupe_key=new_job.dedupe_key,
                status=JobStatus.QUEUED.value,
                attempts=0,
                claim_count=0,
                delivery_attempts=0,
                progress_step=0,
                progress_total=request.total_steps,
                created_at=now,
                updated_at=now,
                spoiler=new_job.spoiler,
                show_progress=new_job.show_progress,
            )
            session.add(row)
            await session.flush()
            if png is not None and input_sha256 is not None:
                session.add(
                    JobInputRow(
                        job_id=row.id, png=png, sha256=input_sha256, size_bytes=len(png), created_at=now
                    )
                )
                await session.flush()
            await _join_turn(session, row)
            return EnqueueResult(job=_to_job(row), created=True)

    async def claim_next(self, claimer: str) -> Job | None:
        """Atomically move the next job in fair order to running for `claimer`; None if none is queued.

        Safe with several claimers (tasks, processes or hosts) at once: each job is claimed once.
        Sets started_at, claimed_by, progress 0/steps, a fresh lease and the next claim number. Running
        jobs whose lease ran out are taken back first (an attempt counted), so they are claimable too.
        """
        # Claimers poll an often empty queue: look without the write lock first, so idle hosts never
        # hold up the chat side's writes.
        async with self._db.sessions() as session:
            now = await database_now(session)
            any_queued = select(JobRow.id).where(JobRow.status == JobStatus.QUEUED.value).limit(1)
            if await session.scalar(any_queued) is None and await session.scalar(_expired(now)) is None:
                return None
        async with self._db.write() as session:
            await _serialize_claims(session)
            now = await database_now(session)
            taken_back = await self._take_back_expired(session, now)
            job = await _claim(session, claimer, now, now + self._lease)
        if taken_back:
            self._signals.notify(Topic.UPDATED)
        if job is None:
            return None
        logger.info(
            "claimed job=%s by %s (attempt %d, claim %d)", job.id, claimer, job.attempts + 1, job.claim_count
        )
        self._signals.notify(Topic.UPDATED)
        return job

    async def _take_back_expired(self, session: AsyncSession, now: datetime) -> list[Job]:
        """Running jobs past their lease: their engine died or hung. Back to queued (or failed)."""
        # SKIP LOCKED: two claimers taking back at once split the rows instead of deadlocking.
        rows = (
            await session.scalars(
                select(JobRow)
                .where(JobRow.status == JobStatus.RUNNING.value, JobRow.lease_expires_at < now)
                .order_by(JobRow.id)
                .with_for_update(skip_locked=True),
                execution_options={"populate_existing": True},
            )
        ).all()
        taken = []
        for row in rows:
            holder = row.claimed_by
            reason = f"The engine {holder} stopped renewing its lease on this job (it died or hung)."
            taken.append(await self._after_crash(session, row, reason, now))
            logger.warning("took over job=%s from %s: its lease expired", row.id, holder)
        return taken

    async def renew_lease(self, job_id: int, claim: int) -> bool:
        """Extend the lease of claim number `claim`; False if the job is no longer running under it
        (cancelled, or taken over): its holder must stop working on it."""
        async with self._db.write() as session:
            now = await database_now(session)
            result = await session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status == JobStatus.RUNNING.value,
                    JobRow.claim_count == claim,
                )
                .values(lease_expires_at=now + self._lease)
                .returning(JobRow.id)
            )
            return result.scalar_one_or_none() is not None

    async def record_progress(self, job_id: int, step: int, total: int, *, claim: int | None = None) -> bool:
        """Store step n of N for a running job and renew its lease. False if the job is no longer
        running (cancelled) or no longer under claim number `claim` (taken over): the claim loop then
        stops the worker's run."""
        async with self._db.write() as session:
            now = await database_now(session)
            query = update(JobRow).where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value)
            if claim is not None:
                query = query.where(JobRow.claim_count == claim)
            result = await session.execute(
                query.values(
                    progress_step=step,
                    progress_total=total,
                    updated_at=now,
                    lease_expires_at=now + self._lease,
                ).returning(JobRow.id)
            )
            stored = result.scalar_one_or_none() is not None
            if not stored:
                await _load(session, job_id)  # raises JobNotFound for an unknown id
        if stored:
            self._signals.notify(Topic.UPDATED)
        return stored

    async def mark_done(
        self,
        job_id: int,
        image: StoredImage,
        *,
        duration_s: float,
        step_seconds: float,
        claim: int | None = None,
        more_images: Sequence[StoredImage] = (),
    ) -> Job:
        """running -> done, with the image's path and sha256 (and those of images 1.. of a job of
        several, `more_images`) and the timings. With `claim`, refused (LeaseLost) unless that claim is
        still the job's latest."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.DONE, claim)
            _finish(row, JobStatus.DONE, await database_now(session))
            row.error = None  # left by an earlier attempt that crashed; this one worked
            row.result_path = image.path
            row.result_sha256 = image.sha256
            row.result_images = _images_json([image, *more_images])
            row.duration_s = duration_s
            row.step_seconds = step_seconds
            row.progress_step = row.progress_total
            await session.flush()
            job = _to_job(row)
        self._signals.notify(Topic.UPDATED)
        logger.info("done job=%s in %.1fs (%.2fs/step)", job.id, duration_s, step_seconds)
        return job

    async def mark_failed(
        self, job_id: int, kind: FailureKind, error: str, *, claim: int | None = None
    ) -> Job:
        """running -> failed with a reason meant for people (the chat side words it for users)."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.FAILED, claim)
            _finish(row, JobStatus.FAILED, await database_now(session))
            row.failure_kind = kind.value
            row.error = error
            await session.flush()
            job = _to_job(row)
        self._signals.notify(Topic.UPDATED)
        logger.warning("failed job=%s kind=%s: %s", job.id, kind.value, error)
        return job

    async def requeue_after_crash(self, job_id: int, reason: str, *, claim: int | None = None) -> Job:
        """The worker died under this job: back to queued with attempts + 1, or failed (WORKER_DIED)
        once attempts reach max_attempts."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.QUEUED, claim)
            job = await self._after_crash(session, row, reason, await database_now(session))
        self._signals.notify(Topic.QUEUED if job.status is JobStatus.QUEUED else Topic.UPDATED)
        return job

    async def release(self, job_id: int, *, claim: int | None = None) -> Job:
        """running -> queued without counting an attempt: the engine stopped on purpose (a clean
        shutdown or restart), so nothing is wrong with the job and it keeps its place."""
        async with self._db.write() as session:
            row = await _load_to_move(session, job_id, JobStatus.QUEUED, claim)
            row.status = JobStatus.QUEUED.value
            row.claimed_by = None
            row.lease_expires_at = None
            row.progress_step = 0
            row.updated_at = await database_now(session)
            await session.flush()
            await _refresh_turn(session, row.platform, row.user_id)
            job = _to_job(row)
        logger.info("released job=%s back to the queue (engine stopping)", job.id)
        self._signals.notify(Topic.QUEUED)
        return job

    async def cancel(self, job_id: int) -> Job:
        """queued or running -> cancelled. A final job is returned unchanged (cancel is idempotent)."""
        async with self._db.write() as session:
            # The user's turn row first, then the job's: the order claims lock them in.
            unlocked = await _load(session, job_id)
            await _lock_turn(session, unlocked.platform, unlocked.user_id)
            row = await _load(session, job_id, for_update=True)
            if JobStatus(row.status).is_final:
                return _to_job(row)
            was_queued = row.status == JobStatus.QUEUED.value
            _finish(row, JobStatus.CANCELLED, await database_now(session))
            row.lease_expires_at = None
            await session.flush()
            if was_queued:
                await _refresh_turn(session, row.platform, row.user_id)
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
            now = await database_now(session)
            row.delivered_at = now
            row.updated_at = now
            row.delivery_claimed_by = None
            row.delivery_lease_expires_at = None
            if result_message_id is not None:
                row.result_message_id = result_message_id
            await session.flush()
            job = _to_job(row)
        logger.info("delivered job=%s", job.id)
        self._signals.notify(Topic.UPDATED)
        return job

    async def claim_presentation(self, job_ids: Sequence[int], deliverer: str, lease_s: float) -> set[int]:
        """Take the right to show and deliver these jobs for `deliverer` (one chat process), for
        `lease_s`: granted where nobody holds it, `deliverer` already does, or the holder's lease ran
        out (that chat process died). Returns the ids now held by `deliverer`; only it posts them."""
        if not job_ids:
            return set()
        async with self._db.write() as session:
            now = await database_now(session)
            # Locked in id order, skipping rows someone else is writing: two chat processes claiming
            # overlapping sets at once never deadlock (a skipped job is looked at again next pass).
            free = (
                await session.scalars(
                    select(JobRow.id)
                    .where(
                        JobRow.id.in_(list(job_ids)),
                        JobRow.delivered_at.is_(None),
                        (JobRow.delivery_claimed_by.is_(None))
                        | (JobRow.delivery_claimed_by == deliverer)
                        | (JobRow.delivery_lease_expires_at < now),
                    )
                    .order_by(JobRow.id)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not free:
                return set()
            await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(free))
                .values(
                    delivery_claimed_by=deliverer,
                    delivery_lease_expires_at=now + timedelta(seconds=lease_s),
                )
            )
            return set(free)

    async def renew_presentations(self, deliverer: str, lease_s: float) -> int:
        """Extend the delivery leases `deliverer` holds (on a timer, so a long upload keeps its job)."""
        async with self._db.write() as session:
            now = await database_now(session)
            result = await session.execute(
                update(JobRow)
                .where(JobRow.delivery_claimed_by == deliverer, JobRow.delivered_at.is_(None))
                .values(delivery_lease_expires_at=now + timedelta(seconds=lease_s))
                .returning(JobRow.id)
            )
            return len(result.scalars().all())

    async def release_presentations(self, deliverer: str) -> None:
        """Give back every delivery claim of `deliverer` (a chat process stopping cleanly)."""
        async with self._db.write() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.delivery_claimed_by == deliverer)
                .values(delivery_claimed_by=None, delivery_lease_expires_at=None)
            )

    async def record_delivery_failure(self, job_id: int, error: str, *, retry_in_s: float) -> Job:
        """Store a failed delivery attempt: the count, the error, since when it has been failing, and
        when the next try is due."""
        async with self._db.write() as session:
            row = await _load(session, job_id, for_update=True)
            now = await database_now(session)
            row.delivery_attempts += 1
            if row.delivery_failing_since is None:
                row.delivery_failing_since = now
            row.delivery_error = error[:2000]
            row.delivery_retry_at = now + timedelta(seconds=retry_in_s)
            await session.flush()
            return _to_job(row)

    async def set_status_message(
        self,
        job_id: int,
        message_id: str,
        *,
        token: str | None = None,
        token_issued_at: datetime | None = None,
    ) -> None:
        """Remember the platform message that shows this job's queue position and progress, and, on
        Discord, the interaction token that edits it (so any chat process, after a restart too, can)."""
        async with self._db.write() as session:
            row = await _load(session, job_id, for_update=True)
            row.status_message_id = message_id
            if token is not None:
                row.status_token = token
                row.status_token_at = token_issued_at or await database_now(session)
            row.updated_at = await database_now(session)

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
            now = await database_now(session)
            moved = [await self._after_crash(session, row, reason, now) for row in left_running]
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

    async def _after_crash(self, session: AsyncSession, row: JobRow, reason: str, now: datetime) -> Job:
        """running -> queued (attempts + 1), or -> failed once attempts reach max_attempts."""
        row.attempts += 1
        row.updated_at = now
        row.claimed_by = None
        row.lease_expires_at = None
        if row.attempts >= self._max_attempts:
            _finish(row, JobStatus.FAILED, now)
            row.failure_kind = FailureKind.WORKER_DIED.value
            row.error = f"{reason} It was tried {row.attempts} times."
            logger.warning("failed job=%s after %d attempts: %s", row.id, row.attempts, reason)
        else:
            row.status = JobStatus.QUEUED.value
            row.error = reason
            row.progress_step = 0
            logger.warning("requeued job=%s (attempt %d failed): %s", row.id, row.attempts, reason)
            await session.flush()
            await _refresh_turn(session, row.platform, row.user_id)
        await session.flush()
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
                .values(result_path=None, result_sha256=None, result_images=None)
            )

    # -- reading -------------------------------------------------------------------------------
    async def input_image(self, job_id: int) -> bytes | None:
        """The PNG the job starts from (stored when it was queued); None for a job without one."""
        async with self._db.sessions() as session:
            png = await session.scalar(select(JobInputRow.png).where(JobInputRow.job_id == job_id))
        return None if png is None else bytes(png)

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
            .where(JobRow.platform == platform, JobRow.user_id == user_id)
            .order_by(JobRow.created_at.desc(), JobRow.id.desc())
            .limit(limit)
        )

    async def last_job(self, platform: Platform, chat_id: str, user_id: str) -> Job | None:
        """The user's most recent job in this chat (for /reroll)."""
        jobs = await self._select(
            select(JobRow)
            .where(JobRow.platform == platform, JobRow.chat_id == chat_id, JobRow.user_id == user_id)
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
                JobRow.platform.in_(list(platforms)),
            )
            .order_by(JobRow.id)
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
def _expired(now: datetime) -> Any:
    return (
        select(JobRow.id)
        .where(JobRow.status == JobStatus.RUNNING.value, JobRow.lease_expires_at < now)
        .limit(1)
    )


def _active_query(platform: Platform, user_id: str) -> Select[JobRow]:
    return (
        select(JobRow)
        .where(JobRow.platform == platform, JobRow.user_id == user_id, JobRow.status.in_(_ACTIVE))
        .order_by(JobRow.created_at, JobRow.id)
    )


async def _check_hourly(session: AsyncSession, requester: Requester, limit: int, now: datetime) -> None:
    """Raise HourlyLimitReached if the requester submitted `limit` jobs in the hour before `now`.

    Every job counts, whatever became of it (a cancelled one may have used the GPU). Called under the
    user's lock, so concurrent commands see each other's jobs.
    """
    window_start = now - HOUR
    # Only the newest `limit` matter: the oldest of them is the one whose leaving frees a place.
    created = (
        await session.scalars(
            select(JobRow.created_at)
            .where(
                JobRow.platform == requester.platform,
                JobRow.user_id == requester.user_id,
                JobRow.created_at > window_start,
            )
            .order_by(JobRow.created_at.desc(), JobRow.id.desc())
            .limit(limit)
        )
    ).all()
    if len(created) >= limit:
        raise HourlyLimitReached(limit, created[-1] + HOUR)


async def _lock_user(session: AsyncSession, requester: Requester) -> None:
    """Serialise this transaction with every other one that locks the same user, until it ends.

    SQLite needs nothing more: a write transaction holds the database's write lock from BEGIN
    IMMEDIATE. PostgreSQL's READ COMMITTED would let two transactions both count the same active jobs,
    so they take a transaction-scoped advisory lock keyed on the user.
    """
    if dialect_name(session) != "postgresql":
        return
    key = f"majicbot-user:{requester.platform}:{requester.user_id}"
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


async def _load(session: AsyncSession, job_id: int, *, for_update: bool = False) -> JobRow:
    query = select(JobRow).where(JobRow.id == job_id)
    if for_update:
        query = query.with_for_update()
    row = await session.scalar(query, execution_options={"populate_existing": True})
    if row is None:
        raise JobNotFound(f"There is no job {job_id}; check the number (see /history for yours).")
    return row


async def _load_to_move(
    session: AsyncSession, job_id: int, target: JobStatus, claim: int | None = None
) -> JobRow:
    """The job's row, locked, if its status may become `target` (and, with `claim`, if that claim is
    still the latest); else InvalidTransition (LeaseLost)."""
    row = await _load(session, job_id, for_update=True)
    if claim is not None and row.claim_count != claim:
        raise LeaseLost(
            f"Job {job_id} was taken over (claim {row.claim_count} replaced claim {claim} when its lease "
            "ran out); this engine's result is discarded."
        )
    current = JobStatus(row.status)
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(
            f"Job {job_id} is {current.value}, so it cannot become {target.value}; "
            "re-read the job and act on its current status."
        )
    return row


def _finish(row: JobRow, status: JobStatus, now: datetime) -> None:
    row.status = status.value
    row.finished_at = now
    row.updated_at = now


async def _claim(session: AsyncSession, claimer: str, now: datetime, lease_until: datetime) -> Job | None:
    """Run the next job of the user whose turn it is: an index lookup in `user_turns`, whatever the
    queue's length (claims are serialised, see `_serialize_claims`)."""
    head = (
        select(UserTurnRow)
        .where(UserTurnRow.next_job_id.is_not(None))
        .order_by(UserTurnRow.last_started_at, UserTurnRow.next_job_id)
        .limit(1)
        .with_for_update()
    )
    # Bounded: each round either claims or repairs a turn that pointed at a job no longer queued.
    for _ in range(100):
        turn = await session.scalar(head, execution_options={"populate_existing": True})
        if turn is None:
            return None
        claimed = await session.scalar(
            update(JobRow)
            .where(JobRow.id == turn.next_job_id, JobRow.status == JobStatus.QUEUED.value)
            .values(
                status=JobStatus.RUNNING.value,
                started_at=now,
                updated_at=now,
                claimed_by=claimer,
                progress_step=0,
                progress_total=JobRow.steps * JobRow.image_count,
                claim_count=JobRow.claim_count + 1,
                lease_expires_at=lease_until,
            )
            .returning(JobRow),
            execution_options={"populate_existing": True},
        )
        if claimed is not None:
            turn.last_started_at = now
        turn.next_job_id = await _oldest_queued(session, turn.platform, turn.user_id)
        await session.flush()
        if claimed is not None:
            return _to_job(claimed)
    return None


async def _serialize_claims(session: AsyncSession) -> None:
    """Claims take turns, as SQLite's write lock makes them: the fair order is strict only if each
    claim sees the previous one's turn update. A claim holds this lock for a few index lookups (about
    a millisecond), so even many claimers spend little time waiting."""
    if dialect_name(session) == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))


async def _oldest_queued(session: AsyncSession, platform: str, user_id: str) -> int | None:
    oldest: int | None = await session.scalar(
        select(func.min(JobRow.id)).where(
            JobRow.platform == platform, JobRow.user_id == user_id, JobRow.status == JobStatus.QUEUED.value
        )
    )
    return oldest


async def _join_turn(session: AsyncSession, row: JobRow) -> None:
    """A job was enqueued: create the user's turn, or point it at this job if none was queued."""
    insert = postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert
    statement = insert(UserTurnRow).values(
        platform=row.platform, user_id=row.user_id, last_started_at=NEVER_STARTED, next_job_id=row.id
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[UserTurnRow.platform, UserTurnRow.user_id],
            set_={"next_job_id": func.coalesce(UserTurnRow.next_job_id, statement.excluded.next_job_id)},
        )
    )


async def _lock_turn(session: AsyncSession, platform: str, user_id: str) -> None:
    await session.execute(
        select(UserTurnRow.platform)
        .where(UserTurnRow.platform == platform, UserTurnRow.user_id == user_id)
        .with_for_update()
    )


async def _refresh_turn(session: AsyncSession, platform: str, user_id: str) -> None:
    """The user's queued jobs changed (cancel, requeue, release): point their turn at the oldest."""
    await session.execute(
        update(UserTurnRow)
        .where(UserTurnRow.platform == platform, UserTurnRow.user_id == user_id)
        .values(next_job_id=await _oldest_queued(session, platform, user_id))
    )


async def _fair_ids(session: AsyncSession) -> list[int]:
    queued = (
        await session.execute(
            select(JobRow.id, JobRow.platform, JobRow.user_id).where(JobRow.status == JobStatus.QUEUED.value)
        )
    ).all()
    if not queued:
        return []
    turns = await session.execute(
        select(UserTurnRow.platform, UserTurnRow.user_id, UserTurnRow.last_started_at).where(
            UserTurnRow.next_job_id.is_not(None), UserTurnRow.last_started_at > NEVER_STARTED
        )
    )
    last_started: dict[UserKey, datetime] = {
        (platform, user_id): started for platform, user_id, started in turns
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
            count=row.image_count,
            strength=row.strength,
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
        claim_count=row.claim_count,
        lease_expires_at=row.lease_expires_at,
        delivery_claimed_by=row.delivery_claimed_by,
        delivery_lease_expires_at=row.delivery_lease_expires_at,
        delivery_attempts=row.delivery_attempts,
        delivery_retry_at=row.delivery_retry_at,
        delivery_failing_since=row.delivery_failing_since,
        delivery_error=row.delivery_error,
        status_token=row.status_token,
        status_token_at=row.status_token_at,
        spoiler=row.spoiler,
        show_progress=row.show_progress,
        origin=JobOrigin(row.origin),
        parent_image_index=row.parent_image_index,
        input_sha256=row.input_sha256,
        images=_stored_images(row),
    )


def _images_json(images: Sequence[StoredImage]) -> str:
    return json.dumps([[image.path, image.sha256, image.size_bytes] for image in images])


def _stored_images(row: JobRow) -> tuple[StoredImage, ...]:
    """A done job's images; rows finished before jobs made several images have only result_path."""
    if row.result_images is not None and row.result_path is not None:
        return tuple(
            StoredImage(path=str(path), sha256=str(sha256), size_bytes=int(size))
            for path, sha256, size in json.loads(row.result_images)
        )
    if row.result_path is not None and row.result_sha256 is not None:
        return (StoredImage(path=row.result_path, sha256=row.result_sha256, size_bytes=0),)
    return ()
