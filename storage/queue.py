"""The durable job queue: one method per operation, each returning domain objects from `storage.jobs`.

CONTRACT (helpers: implement the bodies; keep the signatures, other packages code against them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from storage.database import Database
from storage.jobs import (
    EnqueueResult,
    FailureKind,
    Job,
    NewJob,
    Platform,
    QueuePosition,
    RecoveryReport,
    StoredImage,
)
from storage.signals import JobSignals


class JobNotFound(LookupError):
    """No job has that id."""


class InvalidTransition(RuntimeError):
    """The job is not in a status that allows this operation (e.g. finishing a cancelled job)."""


class JobQueue:
    """Enqueue, claim in fair order, record progress and outcomes, and answer questions about jobs.

    Every write that others may wait for calls ``signals.notify`` after its transaction commits.
    """

    def __init__(self, database: Database, signals: JobSignals, *, max_attempts: int) -> None:
        raise NotImplementedError

    # -- writing -------------------------------------------------------------------------------
    async def enqueue(self, new_job: NewJob) -> EnqueueResult:
        """Store a queued job. With a dedupe key that an active job already holds, return that job."""
        raise NotImplementedError

    async def claim_next(self, claimer: str) -> Job | None:
        """Atomically move the next job in fair order to running for `claimer`; None if none is queued.

        Safe with several claimers (tasks, processes or hosts) at once: each job is claimed once.
        Sets started_at, claimed_by, progress 0/steps.
        """
        raise NotImplementedError

    async def record_progress(self, job_id: int, step: int, total: int) -> bool:
        """Store step n of N for a running job. False if the job is no longer running (cancelled):
        the claim loop then stops the worker's run."""
        raise NotImplementedError

    async def mark_done(
        self, job_id: int, image: StoredImage, *, duration_s: float, step_seconds: float
    ) -> Job:
        """running -> done, with the image's path and sha256 and the timings."""
        raise NotImplementedError

    async def mark_failed(self, job_id: int, kind: FailureKind, error: str) -> Job:
        """running -> failed with a reason meant for people (the chat side words it for users)."""
        raise NotImplementedError

    async def requeue_after_crash(self, job_id: int, reason: str) -> Job:
        """The worker died under this job: back to queued with attempts + 1, or failed (WORKER_DIED)
        once attempts reach max_attempts."""
        raise NotImplementedError

    async def cancel(self, job_id: int) -> Job:
        """queued or running -> cancelled. A final job is returned unchanged (cancel is idempotent)."""
        raise NotImplementedError

    async def mark_delivered(self, job_id: int, *, result_message_id: str | None = None) -> Job:
        """Record that the chat side has posted the outcome; never delivered again after this."""
        raise NotImplementedError

    async def set_status_message(self, job_id: int, message_id: str) -> None:
        """Remember the platform message that shows this job's queue position and progress."""
        raise NotImplementedError

    async def recover(self, claimer: str | None = None) -> RecoveryReport:
        """At startup: jobs left running (by `claimer`, or by anyone when None) go back to queued with
        attempts + 1, or fail past max_attempts; also lists finished jobs never delivered."""
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------------
    async def get(self, job_id: int) -> Job:
        """The job with this id; raises JobNotFound."""
        raise NotImplementedError

    async def queued_in_fair_order(self) -> Sequence[Job]:
        """All queued jobs in the order they will be claimed (round-robin between users: among users
        with queued jobs, the one whose last job started longest ago goes first; FIFO within a user)."""
        raise NotImplementedError

    async def running(self) -> Sequence[Job]:
        raise NotImplementedError

    async def position(self, job_id: int) -> QueuePosition | None:
        """Where a queued job stands in fair order; None if it is not queued."""
        raise NotImplementedError

    async def history(self, platform: Platform, user_id: str, limit: int = 10) -> Sequence[Job]:
        """A user's most recent jobs on a platform, newest first."""
        raise NotImplementedError

    async def last_job(self, platform: Platform, chat_id: str, user_id: str) -> Job | None:
        """The user's most recent job in this chat (for /reroll)."""
        raise NotImplementedError

    async def active_jobs(self, platform: Platform, user_id: str) -> Sequence[Job]:
        """The user's queued and running jobs, oldest first (for quotas and /cancel)."""
        raise NotImplementedError

    async def pending_delivery(self, platforms: Sequence[Platform]) -> Sequence[Job]:
        """Jobs of these platforms that are final but not delivered, oldest first."""
        raise NotImplementedError

    async def changed_since(self, platforms: Sequence[Platform], since: datetime) -> Sequence[Job]:
        """Jobs of these platforms whose row changed after `since` (for progress delivery)."""
        raise NotImplementedError

    async def recent_step_times(self, limit: int = 50) -> Sequence[Job]:
        """The most recent done jobs with step timings, newest first (for ETAs)."""
        raise NotImplementedError
