"""Delivery: the chat side watches job rows and tells each platform what changed.

Each adapter implements a `Presenter`. The claim loop writes rows and signals `Topic.UPDATED`; this loop
wakes on that signal or after `poll_interval_s`, reads what changed, and calls the presenter of the job's
platform. A final job is delivered once: `mark_delivered` follows a successful post, so a crash before it
delivers again after restart rather than never.

Each pass reads the active jobs (running, and queued in fair order) and the final, undelivered jobs of
the platforms that have a presenter here. A job whose status, step or queue position differs from what
was last shown goes to `show_progress`; a final one to `deliver`, `report_failure` or
`report_cancelled`, then `mark_delivered`, then `clean_up`. Chats are served side by side, so a slow
upload or a group waiting out its flood limit does not hold back the others.

Posting and cleaning up are separate steps with separate timeouts: once a post succeeded it is
remembered (and recorded), so a cleanup that fails or hangs (say, deleting the status message) never
makes the image go out again. A post that raises or hangs is tried again on a later pass after a growing
pause (`retry_backoff_s`), for as long as `give_up_after_s` since its first failure: a chat API outage
of minutes or hours loses nothing. Only then is the user told, once, that the image is ready and can be
fetched with /show (`report_ready_later`), the job is marked delivered and an ERROR is logged.

Several chat processes may serve one platform (all on one database). Each job is shown and delivered by
one of them: the loop claims a job (`claim_presentation`, under this loop's `deliverer` name) before it
touches it, renews its claims on a timer, and gives them back when it stops. If a chat process dies, its
claims run out after `delivery_lease_s` and another process takes its jobs over. Failed attempts, the
last error, since when it has been failing and when the next try is due are stored in the job row, so
they survive a restart and every process respects them. (A process killed between the platform
accepting a post and recording it would have the result posted again by its successor: the one window
left, as wide as one answer from the platform plus one database write.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.eta import StepTimes, estimate
from bot.job_view import ButtonAction, JobView, build_view
from bot.metrics import NO_DELIVERY_METRICS, DeliveryMetrics
from storage.jobs import Job, JobStatus, Platform
from storage.queue import JobQueue
from storage.signals import JobSignals, Topic

logger = logging.getLogger(__name__)

_Call = Callable[[], Awaitable[None]]


class Presenter(Protocol):
    """One chat platform's way of showing a job's life to its user."""

    platform: Platform
    result_actions: tuple[ButtonAction, ...]  # the buttons it offers under a finished picture

    async def show_progress(self, view: JobView) -> None:
        """Queue position or step n of N changed: show `view.status_line`. The presenter throttles
        (`bot.status_throttle`) and skips unchanged text."""
        ...

    async def deliver(self, view: JobView) -> str | None:
        """Post the finished image with `view.buttons`; return the platform id of the message it sent."""
        ...

    async def report_failure(self, view: JobView) -> None:
        """Tell the user why the job failed (`view.status_line`) and offer `view.buttons` (a retry)."""
        ...

    async def report_cancelled(self, view: JobView) -> None:
        """Finalise the status message of a cancelled job."""
        ...

    async def clean_up(self, job: Job) -> None:
        """After the outcome was posted and recorded: tidy up (e.g. delete the status message).

        Never posts the outcome again; errors are logged by the caller and not retried."""
        ...

    async def report_ready_later(self, job: Job) -> None:
        """Delivery gave up after a long outage: tell the user, briefly, to fetch the result with /show."""
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
        give_up_after_s: float = 24 * 3600.0,
        retry_backoff_s: tuple[float, float] = (2.0, 60.0),
        call_timeout_s: float = 120.0,
        cleanup_timeout_s: float = 30.0,
        deliverer: str | None = None,
        delivery_lease_s: float = 30.0,
        metrics: DeliveryMetrics = NO_DELIVERY_METRICS,
    ) -> None:
        self._queue = queue
        self._metrics = metrics
        self._signals = signals
        self._presenters = {presenter.platform: presenter for presenter in presenters}
        self._poll_interval_s = poll_interval_s
        self._give_up_after_s = give_up_after_s
        self._backoff_s = retry_backoff_s
        self._call_timeout_s = call_timeout_s
        self._cleanup_timeout_s = cleanup_timeout_s
        self.deliverer = deliverer or default_deliverer()
        self._lease_s = delivery_lease_s
        self._shown: dict[int, _Shown] = {}
        # Posted but not yet recorded (the database write failed): record again, never post again.
        self._posted: dict[int, str | None] = {}
        # Chats whose calls from an earlier pass are still running (each chat is served in order).
        self._busy: dict[tuple[Platform, str], asyncio.Task[None]] = {}
        self._chat_freed = asyncio.Event()
        self._cleanups: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        if not self._presenters:
            logger.warning("delivery loop has no presenters; nothing to deliver")
            return
        logger.info("delivery loop %s started for %s", self.deliverer, ", ".join(sorted(self._presenters)))
        renewer = asyncio.create_task(self._renew_claims(stop))
        try:
            while not stop.is_set():
                # Listen before reading, so an update written during the pass wakes the next one at once.
                self._chat_freed.clear()
                woken = asyncio.ensure_future(self._signals.wait(Topic.UPDATED, self._poll_interval_s))
                freed = asyncio.ensure_future(self._chat_freed.wait())
                stopped = asyncio.ensure_future(stop.wait())
                try:
                    try:
                        await self._start_pass()
                    except Exception:
                        # A database hiccup must not end delivery: the next pass reads everything again.
                        logger.exception(
                            "delivery pass failed; trying again in %.1f s", self._poll_interval_s
                        )
                    await asyncio.wait({woken, freed, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (woken, freed, stopped):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        finally:
            await self._finish_busy_chats()
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

    async def run_once(self) -> None:
        """One pass: outcomes for final undelivered jobs, then progress for active ones; returns once
        every call it started (cleanups included) has ended."""
        await asyncio.gather(*await self._start_pass())
        await asyncio.gather(*self._cleanups)

    async def _start_pass(self) -> list[asyncio.Task[None]]:
        """Read what changed and start serving each chat that is not still busy from an earlier pass
        (a group waiting out its flood limit); returns the started tasks."""
        platforms = tuple(self._presenters)
        running = tuple(await self._queue.running())
        queued = tuple(await self._queue.queued_in_fair_order())
        pending = tuple(await self._queue.pending_delivery(platforms))
        times = StepTimes.from_jobs(await self._queue.recent_step_times())
        now = datetime.now(UTC)
        held = await self._hold(
            [job for job in (*running, *queued, *pending) if job.requester.platform in self._presenters], now
        )

        # Per chat, finished jobs go first: a picture matters more than a position update, and
        # a rate-limited chat should spend its budget on it.
        calls: dict[tuple[Platform, str], list[_Call]] = defaultdict(list)
        for job in pending:
            if job.id in held and _due(job, now) and _chat_of(job) not in self._busy:
                calls[_chat_of(job)].append(functools.partial(self._finish, job))
        active = [(job, 0) for job in running] + [(job, index + 1) for index, job in enumerate(queued)]
        for job, position in active:
            presenter = self._presenters.get(job.requester.platform)
            shown = _Shown(job.status, job.progress_step, position)
            if (
                presenter is None
                or not job.show_progress  # the user turned progress updates off in /settings
                or job.id not in held
                or self._shown.get(job.id) == shown
                or _chat_of(job) in self._busy
            ):
                continue
            # Recorded before the call: a failed edit is retried by the next change, not every pass.
            self._shown[job.id] = shown
            ahead = queued[: position - 1] if position else ()
            view = build_view(
                job,
                position=position,
                jobs_ahead=len(ahead),
                eta_s=estimate(job, ahead, running, times, now=now),
            )
            calls[_chat_of(job)].append(functools.partial(self._show, presenter, view))

        # Forget jobs that are neither active nor held here (e.g. another chat process delivers them).
        active_ids = {job.id for job, _ in active}
        self._shown = {
            job_id: shown for job_id, shown in self._shown.items() if job_id in active_ids and job_id in held
        }

        started: list[asyncio.Task[None]] = []
        for chat, chat_calls in calls.items():
            task = asyncio.create_task(self._serve(chat_calls), name=f"delivery {chat[0]}:{chat[1]}")
            self._busy[chat] = task
            task.add_done_callback(functools.partial(self._chat_done, chat))
            started.append(task)
        return started

    def _chat_done(self, chat: tuple[Platform, str], task: asyncio.Task[None]) -> None:
        if self._busy.get(chat) is task:
            del self._busy[chat]
        self._chat_freed.set()  # what arrived for this chat meanwhile is served by the next pass

    async def _finish_busy_chats(self) -> None:
        """On stop: let calls in flight end (a few seconds at most), then cancel the rest."""
        busy = set(self._busy.values()) | self._cleanups
        if not busy:
            return
        _, late = await asyncio.wait(busy, timeout=min(self._call_timeout_s, 5.0))
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

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
        # One chat's calls in order (outcomes first, oldest job first); chats are served side by side,
        # so a group waiting out its flood limit holds up nobody else.
        for call in calls:
            await call()

    async def _show(self, presenter: Presenter, view: JobView) -> None:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await presenter.show_progress(view)
        except Exception:
            logger.exception("showing progress failed job=%d", view.job.id)

    async def _finish(self, job: Job) -> None:
        presenter = self._presenters[job.requester.platform]
        self._shown.pop(job.id, None)
        if job.id not in self._posted:
            # The pass read this job before this chat's previous calls ended, and they may have
            # delivered it meanwhile: look again right before posting.
            if (await self._queue.get(job.id)).delivered_at is not None:
                return
            try:
                async with asyncio.timeout(self._call_timeout_s):
                    self._posted[job.id] = await self._post_outcome(presenter, job)
            except Exception as error:
                gave_up = await self._give_up_after_failure(job, error)
                self._metrics.delivery_failed(presenter.platform, gave_up=gave_up)
                if not gave_up:
                    return
                await self._tell_ready_later(presenter, job)
                self._posted[job.id] = None
        try:
            await self._queue.mark_delivered(job.id, result_message_id=self._posted[job.id])
        except Exception:
            logger.exception("recording the delivery failed; recording it again later job=%d", job.id)
            return
        del self._posted[job.id]
        logger.info("delivered status=%s platform=%s job=%d", job.status, presenter.platform, job.id)
        # Beside the chat's next posts, not before them: a slow delete must not hold up an image.
        cleanup = asyncio.create_task(self._clean_up(presenter, job), name=f"cleanup job={job.id}")
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def _clean_up(self, presenter: Presenter, job: Job) -> None:
        try:
            async with asyncio.timeout(self._cleanup_timeout_s):
                await presenter.clean_up(job)
        except Exception:
            # The outcome is posted and recorded: a leftover status message is all this costs.
            logger.warning("cleaning up after delivery failed job=%d", job.id, exc_info=True)

    async def _tell_ready_later(self, presenter: Presenter, job: Job) -> None:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                await presenter.report_ready_later(job)
        except Exception:
            logger.warning("could not tell the user to use /show either job=%d", job.id, exc_info=True)

    async def _post_outcome(self, presenter: Presenter, job: Job) -> str | None:
        view = build_view(job, result_actions=presenter.result_actions)
        if job.status is JobStatus.DONE:
            return await presenter.deliver(view)
        if job.status is JobStatus.FAILED:
            await presenter.report_failure(view)
        elif job.status is JobStatus.CANCELLED:
            await presenter.report_cancelled(view)
        return None

    async def _give_up_after_failure(self, job: Job, error: Exception) -> bool:
        """Store a failed post (called while handling it) in the job's row; True once it has been
        failing for `give_up_after_s`."""
        failures = job.delivery_attempts + 1
        low, high = self._backoff_s
        pause = min(high, low * 2 ** min(failures - 1, 30))
        failing_since = job.delivery_failing_since
        try:
            stored = await self._queue.record_delivery_failure(
                job.id, f"{type(error).__name__}: {error}", retry_in_s=pause
            )
            failures, failing_since = stored.delivery_attempts, stored.delivery_failing_since
        except Exception:
            logger.exception("recording a failed delivery failed job=%d", job.id)
        now = datetime.now(UTC)
        failing_for = max(0.0, (now - failing_since).total_seconds()) if failing_since is not None else 0.0
        if failing_for >= self._give_up_after_s:
            logger.error(
                "delivering failed for %.0f s (%d attempts); gave up, told the user to use /show and "
                "marked it delivered job=%d",
                failing_for,
                failures,
                job.id,
                exc_info=error,
            )
            return True
        logger.warning(
            "delivering failed (attempt %d, failing for %.0f s); trying again in %.0f s job=%d",
            failures,
            failing_for,
            pause,
            job.id,
            exc_info=error,
        )
        return False


def _due(job: Job, now: datetime) -> bool:
    """Whether a failed delivery's pause (stored in the row) is over."""
    return job.delivery_retry_at is None or job.delivery_retry_at <= now


def _chat_of(job: Job) -> tuple[Platform, str]:
    return job.requester.platform, job.requester.chat_id
