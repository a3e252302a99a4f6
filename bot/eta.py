"""Estimated times: a rolling per-step time per image size, and ETAs for queued and running jobs.

Pure functions over `Job` values. Build a `StepTimes` from `JobQueue.recent_step_times()` and pass it
with a job's `QueuePosition` to `estimate`:

    times = StepTimes.from_jobs(await queue.recent_step_times())
    pos = await queue.position(job.id)
    eta_s = estimate(job, pos.jobs_ahead, pos.running, times, now=datetime.now(UTC))
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from storage.jobs import Job, JobStatus

SAMPLES_PER_SIZE = 10
"""Only this many of the newest done jobs of one size count: the time follows the current strategy."""


@dataclass(frozen=True, slots=True)
class SizeTiming:
    """Medians over recent done jobs of one size (the median ignores a slow first, warm-up image)."""

    width: int
    height: int
    step_seconds: float
    overhead_seconds: float  # a job's time outside its steps: text encoding, VAE decoding, PNG
    samples: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class StepTimes:
    """Per-size timings; sizes never seen are scaled by pixel count from the nearest size seen."""

    sizes: tuple[SizeTiming, ...] = ()

    @classmethod
    def from_jobs(cls, jobs: Iterable[Job], per_size: int = SAMPLES_PER_SIZE) -> StepTimes:
        """Timings from done jobs, newest first (as `recent_step_times` returns them)."""
        samples: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for job in jobs:
            if job.status is not JobStatus.DONE or job.step_seconds is None or job.step_seconds <= 0:
                continue
            size = (job.request.width, job.request.height)
            bucket = samples.setdefault(size, [])
            if len(bucket) >= per_size:
                continue
            # A job of several images: step_seconds is per step of one image; the overhead is per image.
            count = job.request.count
            steps_time = job.step_seconds * job.request.total_steps
            overhead = max(0.0, (job.duration_s or steps_time) - steps_time) / count
            bucket.append((job.step_seconds, overhead))
        return cls(
            tuple(
                SizeTiming(
                    width=w,
                    height=h,
                    step_seconds=statistics.median(s for s, _ in bucket),
                    overhead_seconds=statistics.median(o for _, o in bucket),
                    samples=len(bucket),
                )
                for (w, h), bucket in sorted(samples.items())
            )
        )

    def _timing_for(self, width: int, height: int) -> tuple[float, float] | None:
        """(step seconds, overhead seconds) for this size, scaled when the size was never seen."""
        if not self.sizes:
            return None
        for timing in self.sizes:
            if (timing.width, timing.height) == (width, height):
                return timing.step_seconds, timing.overhead_seconds
        # Per-step time grows about linearly with the number of latent tokens at these sizes.
        pixels = width * height
        nearest = min(self.sizes, key=lambda t: abs(t.pixels - pixels))
        scale = pixels / nearest.pixels
        return nearest.step_seconds * scale, nearest.overhead_seconds * scale

    def step_seconds(self, width: int, height: int) -> float | None:
        """Expected seconds per denoising step at this size; None before any job was timed."""
        timing = self._timing_for(width, height)
        return None if timing is None else timing[0]

    def job_seconds(self, job: Job) -> float | None:
        """Expected seconds for the whole job from start to finish (all its images)."""
        timing = self._timing_for(job.request.width, job.request.height)
        if timing is None:
            return None
        step_s, overhead_s = timing
        return (overhead_s + step_s * job.request.steps) * job.request.count

    def remaining_seconds(self, job: Job, now: datetime) -> float | None:
        """Expected seconds until a running job is done, from its progress (or its start time)."""
        timing = self._timing_for(job.request.width, job.request.height)
        if timing is None:
            return None
        step_s, overhead_s = timing
        # Progress counts the steps of all the job's images, one image after another.
        total = job.progress_total or job.request.total_steps
        count = job.request.count
        if job.progress_step > 0:
            images_left = count - (job.progress_step - 1) // max(1, job.request.steps)
            # The overhead is mostly decoding after each image's last step; half of the current one's
            # is still ahead.
            return max(0.0, (total - job.progress_step) * step_s + overhead_s * (images_left - 0.5))
        whole = (overhead_s + step_s * job.request.steps) * count
        if job.started_at is None:
            return whole
        elapsed = (now - job.started_at).total_seconds()
        return max(0.0, whole - elapsed)


def estimate(
    job: Job,
    ahead: Sequence[Job],
    running: Sequence[Job],
    times: StepTimes,
    *,
    now: datetime,
) -> float | None:
    """Seconds until `job` should be done; None while some size has no timing to scale from.

    A running job: what is left of it. A queued job: what is left of the running jobs plus the jobs
    ahead of it, shared among as many workers as jobs are running now (at least one), plus its own time.
    `now` is timezone-aware, like the times the queue stores: `datetime.now(UTC)`.
    """
    if job.status is JobStatus.RUNNING:
        return times.remaining_seconds(job, now)
    if job.status is not JobStatus.QUEUED:
        return None
    own = times.job_seconds(job)
    if own is None:
        return None
    before = 0.0
    for other in running:
        left = times.remaining_seconds(other, now)
        if left is None:
            return None
        before += left
    for other in ahead:
        whole = times.job_seconds(other)
        if whole is None:
            return None
        before += whole
    return before / max(1, len(running)) + own
