"""The claim loop: take the next queued job in fair order, run it in the worker, record what happened.

    claim_next -> input image (if any) -> worker.run (progress -> record_progress)
                                           -> ImageStore.save (each image) + mark_done
                                                           -> mark_failed (out of memory, timeout, error)
                                                           -> requeue_after_crash (the worker died)

It meets the chat side only through job rows (and a wake-up signal): several hosts may run one each
against a shared database. The next job is claimed as soon as the worker answers (storing the image and
marking the job done overlap the next job), so the GPU stays busy back to back; `last_gap_s` is the
measured idle time between two queued jobs. With the queue empty it waits for `Topic.QUEUED`, at most
`poll_interval_s`.

Leases: every write about a job carries the claim number it was claimed with, and while the job runs
its lease is renewed with each progress write and at least every third of the lease. If a renewal or
a write is refused (the lease ran out and another engine took the job over, or it was cancelled), the
worker's run is stopped and its result discarded: the other engine's attempt is the one that counts.

Outcomes are never dropped: writing the PNG and recording done (or failed, or back to the queue) is
retried with a growing pause (`outcome_retry_s`) while the database is locked or unreachable or the disk
is full, with the result kept in memory meanwhile, so a job is never left `running` while this process
lives; once the write succeeds the chat side posts it once. What a stopping process could not record
in `stop_timeout_s` stays `running` for `recover()` at the next start, or for another engine once its
lease has run out (a result held past the lease is discarded: its write is refused).

Stopping: a job running when `stop` is set is cancelled in the worker and put back in the queue at once
with `release` (rows stay truthful, another host can take it). A deliberate stop is not the job's fault,
so it costs no attempt; only a worker that died (or a crash, found by `recover()` at the next start)
does. A job that finishes while being stopped is stored as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from engine.errors import (
    EngineError,
    EngineStartError,
    EngineStopped,
    InputImageUnreadable,
    JobFailed,
    WorkerDied,
)
from engine.messages import GenerationRequest, JobErrorKind, JobSucceeded, StepProgress
from engine.metrics import NO_ENGINE_METRICS, EngineMetrics
from engine.png_metadata import encode_result
from engine.stored_request import generation_request
from engine.supervisor import WorkerSupervisor
from storage.images import ImageStore
from storage.jobs import FailureKind, Job, StoredImage
from storage.queue import InvalidTransition, JobNotFound, JobQueue
from storage.signals import JobSignals, Topic

logger = logging.getLogger(__name__)

T = TypeVar("T")

FAILURE_KINDS: dict[JobErrorKind, FailureKind] = {
    JobErrorKind.OUT_OF_MEMORY: FailureKind.OUT_OF_MEMORY,
    JobErrorKind.TOO_LARGE: FailureKind.OUT_OF_MEMORY,
    JobErrorKind.TIMEOUT: FailureKind.TIMEOUT,
    JobErrorKind.ERROR: FailureKind.ERROR,
}
"""How a failed run is stored. CANCELLED is not a failure: the row was cancelled, or the job goes back."""


def _succeeded(run: asyncio.Task[JobSucceeded]) -> bool:
    return not run.cancelled() and run.exception() is None


class _ProgressWriter:
    """Stores the latest step of one job, one write at a time (fast steps are coalesced), and keeps
    the job's lease: each write renews it, and so does a renewal every `renew_every_s` without one.

    A write or renewal that finds the job no longer running under this claim means it was cancelled
    or taken over by another engine: the worker is told to stop.
    """

    def __init__(self, queue: JobQueue, worker: WorkerSupervisor, job: Job, renew_every_s: float) -> None:
        self._queue = queue
        self._worker = worker
        self._job_id = job.id
        self._claim = job.claim_count
        self._renew_every_s = renew_every_s
        self._latest: StepProgress | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self.cancelled = False
        self._task = asyncio.get_running_loop().create_task(self._write())

    def on_step(self, progress: StepProgress) -> None:
        self._latest = progress
        self._wake.set()

    async def _write(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # no step for a while: renew the lease anyway
                await asyncio.wait_for(self._wake.wait(), timeout=self._renew_every_s)
            self._wake.clear()
            progress, self._latest = self._latest, None
            if self._closed:
                return
            try:
                if progress is None:
                    running = await self._queue.renew_lease(self._job_id, self._claim)
                else:
                    running = await self._queue.record_progress(
                        self._job_id, progress.step, progress.total, claim=self._claim
                    )
            except Exception as exc:
                # Progress is a courtesy (the next step writes it again); the outcome is what is retried.
                # A lease not renewed for a while is renewed on the next turn, well before it runs out.
                logger.warning("job=%d: could not store progress or renew the lease: %s", self._job_id, exc)
                continue
            if not running and not self.cancelled:
                self.cancelled = True
                logger.info(
                    "job=%d is no longer running under claim %d (cancelled, or taken over after its "
                    "lease ran out); stopping it in the worker",
                    self._job_id,
                    self._claim,
                )
                await self._worker.cancel(self._job_id)

    async def close(self) -> None:
        """Stop writing; a write in flight is finished, not interrupted (it holds a transaction)."""
        self._closed = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._task, timeout=30)
        except TimeoutError:
            logger.error("job=%d: a progress write did not finish within 30 s", self._job_id)


class ClaimLoop:
    """Claims jobs for one worker and records their outcomes. `run(stop)` until `stop` is set."""

    def __init__(
        self,
        queue: JobQueue,
        images: ImageStore,
        signals: JobSignals,
        worker: WorkerSupervisor,
        *,
        claimer: str,
        poll_interval_s: float,
        stop_timeout_s: float = 30.0,
        outcome_retry_s: tuple[float, float] = (0.5, 10.0),
        metrics: EngineMetrics = NO_ENGINE_METRICS,
    ) -> None:
        self._queue = queue
        self._metrics = metrics
        self._images = images
        self._signals = signals
        self._worker = worker
        self._claimer = claimer
        self._poll_interval_s = poll_interval_s
        self._stop_timeout_s = stop_timeout_s
        self._outcome_retry_s = outcome_retry_s
        self._stop: asyncio.Event | None = None
        self._stopped_at: float | None = None  # loop.time() when `stop` was seen; bounds retries after
        self._finishing: set[asyncio.Task[None]] = set()
        self._previous_end: float | None = None
        self.last_gap_s: float | None = None
        self._previous_generate_finished: float | None = None
        self.last_gpu_idle_s: float | None = None
        """Seconds the worker sat idle between the last two jobs when the second was already queued."""

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until `stop` is set; then finish recording and return.

        Returns early if the supervisor was stopped under it. The worker is not stopped here: its owner
        stops it after this returns.
        """
        logger.info("claim loop %s started", self._claimer)
        self._stop = stop
        try:
            while not stop.is_set():
                if not await self._next(stop):
                    break
        finally:
            if self._stopped_at is None:
                self._stopped_at = asyncio.get_running_loop().time()
            await self._shutdown()

    async def _next(self, stop: asyncio.Event) -> bool:
        """One turn: wait for the worker, claim a job and run it (or wait for one). False: give up."""
        try:
            ready = await self._until_stopped(self._worker.start(), stop)
            if ready is None:
                return False
            job = await self._queue.claim_next(self._claimer)
            if job is None:
                self._previous_end = None  # idle: the next job's start is no gap
                self._previous_generate_finished = None
                await self._wait_for_work(stop)
                return True
            await self._run_job(job, stop)
        except EngineStopped:
            logger.warning("claim loop %s: the engine was stopped; no more jobs are claimed", self._claimer)
            return False
        except EngineStartError as exc:
            logger.error("the engine cannot start, retrying: %s", exc)
            await self._until_stopped(asyncio.sleep(self._poll_interval_s), stop)
        except Exception:
            logger.exception("claim loop %s: unexpected error; going on", self._claimer)
            await self._until_stopped(asyncio.sleep(self._poll_interval_s), stop)
        return True

    async def _run_job(self, job: Job, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        if job.started_at is not None:
            self._metrics.job_started(max((job.started_at - job.created_at).total_seconds(), 0.0))
        if self._previous_end is not None:
            self.last_gap_s = loop.time() - self._previous_end
            logger.info("job=%d starts %.1f ms after the previous job", job.id, self.last_gap_s * 1000)
        logger.info(
            "job=%d running (attempt %d): %d image(s) %dx%d, %d steps%s",
            job.id,
            job.attempts + 1,
            job.request.count,
            job.request.width,
            job.request.height,
            job.request.steps,
            "" if not job.has_input_image else f" from an image at strength {job.request.strength}",
        )
        wanted = await self._request_for(job)
        if wanted is None:
            return
        progress = _ProgressWriter(self._queue, self._worker, job, renew_every_s=self._queue.lease_s / 3)
        run = loop.create_task(self._worker.run(job.id, wanted, progress.on_step))
        stopper = loop.create_task(stop.wait())
        stopping = False
        try:
            await asyncio.wait({run, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                stopping = True
                logger.info("job=%d: stopping; cancelling it in the worker", job.id)
                await self._worker.cancel(job.id)
                # The supervisor kills a worker that ignores the cancel; this bound is a second belt.
                await asyncio.wait({run}, timeout=self._stop_timeout_s)
        finally:
            stopper.cancel()
            if not run.done():
                run.cancel()  # run() tells the worker to stop the job
                await asyncio.gather(run, return_exceptions=True)
            await progress.close()
            self._previous_end = loop.time()
        # A job that did not succeed breaks the back-to-back chain the GPU idle time is measured over.
        if not _succeeded(run):
            self._previous_generate_finished = None
        try:
            result = run.result()
        except asyncio.CancelledError:
            await self._transition(job, lambda: self._queue.release(job.id, claim=job.claim_count))
        except JobFailed as exc:
            await self._record_failure(job, exc, cancelled_by_user=progress.cancelled, stopping=stopping)
        except (WorkerDied, EngineError) as exc:
            reason = exc.reason if isinstance(exc, WorkerDied) else str(exc)
            await self._transition(
                job, lambda: self._queue.requeue_after_crash(job.id, reason, claim=job.claim_count)
            )
        else:
            if progress.cancelled:
                logger.info("job=%d finished after it was cancelled or taken over; result discarded", job.id)
                return
            self._metrics.job_ran(result)
            self._note_gpu_idle(job, result)
            task = loop.create_task(self._store(job, wanted, result))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)

    async def _request_for(self, job: Job) -> GenerationRequest | None:
        """The worker's request for a claimed job, with its input image decoded and sized; None when
        the job could not be given one (it was failed, or released because the loop is stopping)."""
        png = None
        if job.has_input_image:
            png = await self._with_retries(
                job, "read its input image", lambda: self._queue.input_image(job.id)
            )
        if png is None and job.has_input_image:
            if self._stop is not None and self._stop.is_set():
                await self._transition(job, lambda: self._queue.release(job.id, claim=job.claim_count))
                return None
            error = "The job's input image is missing from the database; queue it again with the image."
        else:
            try:
                if png is None:
                    return generation_request(job.request)
                return await asyncio.to_thread(generation_request, job.request, png)  # decodes, resizes
            except InputImageUnreadable as exc:
                error = f"{exc} Queue it again with a PNG, JPEG or WebP image."
            except ValueError as exc:  # a row the chat side should never have written (count, strength)
                error = f"The job's request cannot be run: {exc}."
        logger.error("job=%d: %s", job.id, error)
        await self._transition(
            job, lambda: self._queue.mark_failed(job.id, FailureKind.ERROR, error, claim=job.claim_count)
        )
        return None

    def _note_gpu_idle(self, job: Job, result: JobSucceeded) -> None:
        """GPU idle between two back-to-back jobs, on the worker's clock: from the previous job's backend
        call returning to this one's starting (claiming, messaging, and nothing else)."""
        if self._previous_generate_finished is not None:
            self.last_gpu_idle_s = result.generate_started - self._previous_generate_finished
            logger.info("job=%d: the GPU idled %.1f ms before it", job.id, self.last_gpu_idle_s * 1000)
        self._previous_generate_finished = result.generate_finished

    async def _record_failure(
        self, job: Job, failure: JobFailed, *, cancelled_by_user: bool, stopping: bool
    ) -> None:
        if failure.kind is JobErrorKind.CANCELLED:
            if cancelled_by_user:
                logger.info("job=%d cancelled", job.id)
                self._metrics.job_outcome("cancelled")
                return
            # Not asked for by the job's row: the engine is stopping. If the row was cancelled
            # meanwhile, the transition is refused and nothing changes.
            if stopping:
                await self._transition(job, lambda: self._queue.release(job.id, claim=job.claim_count))
            else:
                await self._transition(
                    job,
                    lambda: self._queue.requeue_after_crash(job.id, failure.message, claim=job.claim_count),
                )
            return
        kind = FAILURE_KINDS[failure.kind]
        await self._transition(
            job, lambda: self._queue.mark_failed(job.id, kind, failure.message, claim=job.claim_count)
        )

    async def _store(self, job: Job, wanted: GenerationRequest, result: JobSucceeded) -> None:
        """Write the PNGs and mark the job done (overlapping the next job's run), retrying both."""
        try:
            pngs = await asyncio.to_thread(encode_result, wanted, result, source_job=job.parent_id)
        except Exception as exc:
            # A bug, not a condition that passes: trying again would fail the same way.
            logger.exception("job=%d: the image could not be encoded", job.id)
            error = f"The image could not be encoded: {exc}."
            await self._transition(
                job, lambda: self._queue.mark_failed(job.id, FailureKind.ERROR, error, claim=job.claim_count)
            )
            return

        # Saved under this claim's number, so an engine that lost the job meanwhile never overwrites
        # its successor's images; mark_done below is then refused (LeaseLost) and nothing else changes.
        def save(index: int, png: bytes) -> Callable[[], Awaitable[StoredImage]]:
            seed = wanted.image_seed(index)
            return lambda: self._images.save(job.id, seed, png, claim=job.claim_count, index=index)

        stored = []
        for index, png in enumerate(pngs):
            image = await self._with_retries(
                job, f"store its image {index + 1} of {len(pngs)}", save(index, png)
            )
            if image is None:
                return
            stored.append(image)
        await self._transition(
            job,
            lambda: self._queue.mark_done(
                job.id,
                stored[0],
                duration_s=result.seconds,
                step_seconds=result.step_seconds,
                claim=job.claim_count,
                more_images=stored[1:],
            ),
        )

    async def _transition(self, job: Job, change: Callable[[], Awaitable[Job]]) -> None:
        """Apply one status change, retried while the database fails; a job cancelled or removed
        meanwhile keeps what it has."""
        try:
            after = await self._with_retries(job, "record its outcome", change)
        except (InvalidTransition, JobNotFound) as exc:
            logger.info("job=%d changed meanwhile; leaving it as it is (%s)", job.id, exc)
            return
        if after is not None:
            logger.info("job=%d is now %s", job.id, after.status.value)
            self._metrics.job_outcome(after.status.value)

    async def _with_retries(self, job: Job, what: str, attempt: Callable[[], Awaitable[T]]) -> T | None:
        """`attempt()`'s result, trying again after a growing pause while it raises (other than a
        domain error, which is raised); None once the loop is stopping and its grace has passed."""
        loop = asyncio.get_running_loop()
        low, high = self._outcome_retry_s
        failures = 0
        while True:
            try:
                return await attempt()
            except (InvalidTransition, JobNotFound):
                raise
            except Exception as exc:
                failures += 1
                if self._stopped_at is None and self._stop is not None and self._stop.is_set():
                    self._stopped_at = loop.time()
                pause = min(high, low * 2 ** min(failures - 1, 20))
                if (
                    self._stopped_at is not None
                    and loop.time() + pause > self._stopped_at + self._stop_timeout_s
                ):
                    logger.error(
                        "job=%d: could not %s before stopping (%s); it stays running for the next start",
                        job.id,
                        what,
                        exc,
                    )
                    return None
                logger.error(
                    "job=%d: could not %s (attempt %d: %s); the result is kept, trying again in %.1f s",
                    job.id,
                    what,
                    failures,
                    exc,
                    pause,
                )
            await asyncio.sleep(pause)

    async def _wait_for_work(self, stop: asyncio.Event) -> None:
        await self._until_stopped(self._signals.wait(Topic.QUEUED, self._poll_interval_s), stop)

    async def _until_stopped(self, work: Awaitable[T], stop: asyncio.Event) -> T | None:
        """`work`'s result, or None (with `work` cancelled) if `stop` is set first."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def _shutdown(self) -> None:
        """Finish storing results already made (bounded), then return."""
        if self._finishing:
            logger.info("claim loop %s: storing %d finished jobs", self._claimer, len(self._finishing))
            await asyncio.wait(set(self._finishing), timeout=self._stop_timeout_s)
        logger.info("claim loop %s stopped", self._claimer)
