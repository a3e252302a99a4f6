"""ETAs from rolling per-size step times: pure functions over Job values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.eta import StepTimes, estimate
from bot.telegram import TELEGRAM
from storage.jobs import ImageRequest, Job, JobStatus, Requester

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job(
    *,
    status: JobStatus = JobStatus.QUEUED,
    size: tuple[int, int] = (1024, 1024),
    steps: int = 20,
    step_seconds: float | None = None,
    duration_s: float | None = None,
    progress_step: int = 0,
    started_at: datetime | None = None,
) -> Job:
    return Job(
        id=1,
        requester=Requester(TELEGRAM, "1", "1", "someone"),
        request=ImageRequest(prompt="p", seed=1, steps=steps, width=size[0], height=size[1], guidance=3.5),
        parent_id=None,
        status=status,
        attempts=0,
        created_at=NOW,
        started_at=started_at,
        finished_at=None,
        delivered_at=None,
        progress_step=progress_step,
        progress_total=steps if status is JobStatus.RUNNING else 0,
        error=None,
        failure_kind=None,
        result_path=None,
        result_sha256=None,
        duration_s=duration_s,
        step_seconds=step_seconds,
        claimed_by=None,
        status_message_id=None,
        result_message_id=None,
        dedupe_key=None,
    )


def done(size: tuple[int, int], step_seconds: float, steps: int = 20, overhead: float = 2.0) -> Job:
    return job(
        status=JobStatus.DONE,
        size=size,
        steps=steps,
        step_seconds=step_seconds,
        duration_s=overhead + steps * step_seconds,
    )


def test_no_timings_means_no_estimate() -> None:
    times = StepTimes.from_jobs([])
    assert times.step_seconds(1024, 1024) is None
    assert estimate(job(), [], [], times, now=NOW) is None


def test_the_median_of_recent_jobs_of_a_size_ignores_a_slow_first_image() -> None:
    times = StepTimes.from_jobs([done((1024, 1024), 1.0), done((1024, 1024), 1.2), done((1024, 1024), 9.0)])
    assert times.step_seconds(1024, 1024) == pytest.approx(1.2)


def test_only_the_newest_jobs_per_size_count() -> None:
    newest_first = [done((512, 512), 0.5)] * 3 + [done((512, 512), 5.0)] * 10
    assert StepTimes.from_jobs(newest_first, per_size=3).step_seconds(512, 512) == pytest.approx(0.5)


def test_unfinished_or_untimed_jobs_are_ignored() -> None:
    times = StepTimes.from_jobs([job(status=JobStatus.FAILED, step_seconds=3.0), job(status=JobStatus.DONE)])
    assert times.sizes == ()


def test_an_unseen_size_is_scaled_by_pixels_from_the_nearest_size() -> None:
    times = StepTimes.from_jobs([done((1024, 1024), 1.0), done((512, 512), 0.3)])
    assert times.step_seconds(1024, 768) == pytest.approx(0.75)  # nearest is 1024x1024
    assert times.step_seconds(256, 256) == pytest.approx(0.3 / 4)


def test_a_queued_job_waits_for_the_running_job_and_those_ahead() -> None:
    times = StepTimes.from_jobs([done((1024, 1024), 1.0, overhead=2.0)])  # 22 s per 20-step job
    running = job(status=JobStatus.RUNNING, progress_step=15, started_at=NOW - timedelta(seconds=17))
    ahead = [job(), job(steps=10)]  # 22 s + 12 s
    eta = estimate(job(), ahead, [running], times, now=NOW)
    # 5 steps left + half the overhead, then the jobs ahead, then itself.
    assert eta == pytest.approx((5 * 1.0 + 1.0) + 22 + 12 + 22)


def test_several_running_jobs_mean_several_workers_share_the_queue() -> None:
    times = StepTimes.from_jobs([done((1024, 1024), 1.0, overhead=0.0)])
    running = [job(status=JobStatus.RUNNING, progress_step=10) for _ in range(2)]
    assert estimate(job(), [job()], running, times, now=NOW) == pytest.approx((10 + 10 + 20) / 2 + 20)


def test_a_running_job_without_progress_counts_from_its_start() -> None:
    times = StepTimes.from_jobs([done((1024, 1024), 1.0, overhead=2.0)])
    started = job(status=JobStatus.RUNNING, started_at=NOW - timedelta(seconds=5))
    assert estimate(started, [], [], times, now=NOW) == pytest.approx(17.0)
    late = job(status=JobStatus.RUNNING, started_at=NOW - timedelta(seconds=60))
    assert estimate(late, [], [], times, now=NOW) == 0.0


def test_final_jobs_have_no_eta() -> None:
    times = StepTimes.from_jobs([done((1024, 1024), 1.0)])
    assert estimate(done((1024, 1024), 1.0), [], [], times, now=NOW) is None
