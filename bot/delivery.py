"""Delivery: the chat side watches job rows and tells each platform what changed.

Each adapter implements a `Presenter`. The claim loop writes rows and signals `Topic.UPDATED`; this loop
wakes on that signal or after `poll_interval_s`, reads what changed, and calls the presenter of the job's
platform. A final job is delivered once: `mark_delivered` follows a successful post, so a crash before it
delivers again after restart rather than never.

Each pass reads the active jobs (running, and queued in fair order) and the final, undelivered jobs of
the platforms that have a presenter here. A job whose status, step or queue position differs from what
was last shown goes to `show_progress`; a final one to `deliver`, `report_failure` or
`report_cancelled`, then `mark_delivered`. Platforms are served side by side, so a slow upload to one
does not hold back the other. A presenter call that raises or hangs is logged and tried again on a later
pass after a growing pause; after `max_delivery_attempts` the job is marked delivered anyway, with an
error in the log, so one undeliverable job cannot loop forever.

Several chat processes may serve one platform (all on one database). Each job is shown and delivered by
one of them: the loop claims a job (`claim_presentation`, under this loop's `deliverer` name) before it
touches it, renews its claims on a timer, and gives them back when it stops. If a chat process dies, its
claims run out after `delivery_lease_s` and another process takes its jobs over. Failed attempts, the
last error and when the next try is due are stored in the job row, so they survive a restart and every
process respects them. (A process killed between posting and recording the post would have the result
posted again by its successor: the one window left, a few milliseconds wide.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.metrics import NO_DELIVERY_METRICS, DeliveryMetrics
from engine.eta import StepTimes, estimate
from storage.jobs import Job, JobStatus, Platform
from storage.queue import JobQueue
from storage.signals import JobSignals, Topic

logger = logging.getLogger(__name__)

_Call = Callable[[], Awaitable[None]]


class Presenter(Protocol):
    """One chat platform's way of showing a job's life to its user."""

    platform: Platform

    async def show_progress(self, job: Job, eta_s: float | None) -> None:
        """Queue position or step n of N changed. The presenter throttles and skips unchanged text."""
        ...

    async def deliver(self, job: Job) -> str | None:
        """Post the finished image; return the platform id of the message it sent."""
        ...

    async def report_failure(self, job: Job) -> None:
        """Tell the user why the job failed (one line) and offer a retry."""
        ...

    async def report_cancelled(self, job: Job) -> None:
        """Finalise the status message of a cancelled job."""
        ...


@dataclass(frozen=True, slots=True)
class _Shown:
    """What a user last saw of an active job: a change in any of these is worth an update."""

    status: JobStatus
    step: int
    position: int  # 0 while running


def default_deliverer() -> str:
    """This chat process's name in delivery claims: unique among the processes sharing a database."""
    return f"{socket.gethostname()}/{os.getpid()}"


class DeliveryLoop:
    """Runs until `stop` is set; never lets one presenter's error stop the others."""

    def __init__(
        self,
        queue: JobQueue,
        signals: JobSignals,
        presenters: Sequence[Presenter],
        *,
        poll_interval_s: float,
        max_delivery_attempts: int = 5,
        retry_backoff_s: tuple[float, float] = (2.0, 60.0),
        call_timeout_s: float = 120.0,
        deliverer: str | None = None,
        delivery_lease_s: float = 30.0,
        metrics: DeliveryMetrics = NO_DELIVERY_METRICS,
    ) -> None:
        self._queue = queue
        self._metrics = metrics
        self._signals = signals
        self._presenters = {presenter.platform: presenter for presenter in presenters}
        self._poll_interval_s = poll_interval_s
        self._max_attempts = max_delivery_attempts
        self._backoff_s = retry_backoff_s
        self._call_timeout_s = call_timeout_s
        self.deliverer = deliverer or default_deliverer()
        self._lease_s = delivery_lease_s
        self._shown: dict[int, _Shown] = {}
        # Posted but not yet recorded (the database write failed): record again, never post again.
        self._posted: dict[int, str | None] = {}

    async def run(self, stop: asyncio.Event) -> None:
        if not self._presenters:
            logger.warning("delivery loop has no presenters; nothing to deliver")
            return
        logger.info("delivery loop %s started for %s", self.deliverer, ", ".join(sorted(self._presenters)))
        renewer = asyncio.create_task(self._renew_claims(stop))
        try:
            await self._serve_until(stop)
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            with contextlib.suppress(Exception):
                # Another chat process (or this one, restarted) takes these jobs at once, not after the lease.
                await self._queue.release_presentations(self.deliverer)
        logger.info("delivery loop stopped")

    async def _renew_claims(self, stop: asyncio.Event) -> None:
        """Keep this loop's delivery claims alive, also while a slow upload holds up the passes."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._lease_s / 3)
            if stop.is_set():
                return
            try:
                await self._queue.renew_presentations(self.deliverer, self._lease_s)
            except Exception:
                logger.exception("renewing the delivery claims of %s failed", self.deliverer)

    async def _serve_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Listen before reading, so an update written during the pass wakes the next one at once.
            woken = asyncio.ensure_future(self._signals.wait(Topic.UPDATED, self._poll_interval_s))
            stopped = asyncio.ensure_future(stop.wait())
            try:
                try:
                    await self.run_once()
                except Exception:
                    # A database hiccup must not end delivery: the next pass reads everything again.
                    logger.exception("delivery pass failed; trying again in %.1f s", self._poll_interval_s)
                await asyncio.wait({woken, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (woken, stopped):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def run_once(self) -> None:
        """One pass: outcomes for final undelivered jobs, then progress for active ones."""
        platforms = tuple(self._presenters)
        running = tuple(await self._queue.running())
        queued = tuple(await self._queue.queued_in_fair_order())
        pending = tuple(await self._queue.pending_delivery(platforms))
        times = StepTimes.from_jobs(await self._queue.recent_step_times())
        now = datetime.now(UTC)
        held = await self._hold(
            [job for job in (*running, *queued, *pending) if job.requester.platform in self._presenters], now
        )

        # Per platform, finished jobs go first: a picture matters more than a position update, and
        # a rate-limited platform should spend its budget on it.
        calls: dict[Platform, list[_Call]] = {platform: [] for platform in platforms}
        for job in pending:
            if job.id in held and _due(job, now):
                calls[job.requester.platform].append(functools.partial(self._finish, job))
        active = [(job, 0) for job in running] + [(job, index + 1) for index, job in enumerate(queued)]
        for job, position in active:
            presenter = self._presenters.get(job.requester.platform)
            shown = _Shown(job.status, job.progress_step, position)
            if presenter is None or job.id not in held or self._shown.get(job.id) == shown:
                continue
            # Recorded before the call: a failed edit is retried by the next change, not every pass.
            self._shown[job.id] = shown
            ahead = queued[: position - 1] if position else ()
            eta_s = estimate(job, ahead, running, times, now=now)
            calls[presenter.platform].append(functools.partial(self._show, presenter, job, eta_s))

        # Forget jobs that are neither active nor held here (e.g. another chat process delivers them).
        self._shown = {job_id: shown for job_id, shown in self._shown.items() if job_id in held}

        await asyncio.gather(
            *(self._serve(platform_calls) for platform_calls in calls.values() if platform_calls)
        )

    # -- the parts of a pass -------------------------------------------------------------------
    async def _hold(self, jobs: Sequence[Job], now: datetime) -> set[int]:
        """The ids among `jobs` this loop may show and deliver: those it holds a fresh claim on, plus
        those it could claim now (unclaimed, or another process's claim ran out). One write, and only
        when there is something to claim."""
        fresh = now + timedelta(seconds=self._lease_s / 2)
        held: set[int] = set()
        wanted: list[int] = []
        for job in jobs:
            owner, until = job.delivery_claimed_by, job.delivery_lease_expires_at
            if owner == self.deliverer and until is not None and until > fresh:
                held.add(job.id)
            elif owner is None or owner == self.deliverer or until is None or until <= now:
                wanted.append(job.id)
        if wanted:
            held |= await self._queue.claim_presentation(wanted, self.deliverer, self._lease_s)
        return held

    async def _serve(self, calls: list[_Call]) -> None:
        # One platform's calls in order (oldest job first), so its rate limits see a steady stream.
        for call in calls:
            await call()

    async def _show(self, presenter: Presenter, job: Job, eta_s: float | None) -> None:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await presenter.show_progress(job, eta_s)
        except Exception:
            logger.exception("showing progress failed job=%d", job.id)

    async def _finish(self, job: Job) -> None:
        presenter = self._presenters[job.requester.platform]
        self._shown.pop(job.id, None)
        if job.id not in self._posted:
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    self._posted[job.id] = await self._post_outcome(presenter, job)
            except Exception as error:
                gave_up = await self._give_up_after_failure(job, error)
                self._metrics.delivery_failed(presenter.platform, gave_up=gave_up)
                if not gave_up:
                    return
                self._posted[job.id] = None
        try:
            await self._queue.mark_delivered(job.id, result_message_id=self._posted[job.id])
        except Exception:
            logger.exception("recording the delivery failed; recording it again later job=%d", job.id)
            return
        del self._posted[job.id]
        logger.info("delivered status=%s platform=%s job=%d", job.status, presenter.platform, job.id)

    async def _post_outcome(self, presenter: Presenter, job: Job) -> str | None:
        if job.status is JobStatus.DONE:
            return await presenter.deliver(job)
        if job.status is JobStatus.FAILED:
            await presenter.report_failure(job)
        elif job.status is JobStatus.CANCELLED:
            await presenter.report_cancelled(job)
        return None

    async def _give_up_after_failure(self, job: Job, error: Exception) -> bool:
        """Store a failed post (called while handling it); True once it is time to stop trying."""
        failures = job.delivery_attempts + 1
        low, high = self._backoff_s
        pause = min(high, low * 2 ** (failures - 1))
        try:
            stored = await self._queue.record_delivery_failure(
                job.id, f"{type(error).__name__}: {error}", retry_in_s=pause
            )
            failures = stored.delivery_attempts
        except Exception:
            logger.exception("recording a failed delivery failed job=%d", job.id)
        if failures >= self._max_attempts:
            logger.error(
                "delivering failed %d times; giving up and marking it delivered job=%d",
                failures,
                job.id,
                exc_info=error,
            )
            return True
        logger.error(
            "delivering failed (attempt %d of %d); trying again in %.0f s job=%d",
            failures,
            self._max_attempts,
            pause,
            job.id,
            exc_info=error,
        )
        return False


def _due(job: Job, now: datetime) -> bool:
    """Whether a failed delivery's pause (stored in the row) is over."""
    return job.delivery_retry_at is None or job.delivery_retry_at <= now
