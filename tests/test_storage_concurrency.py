"""Many writers and claimers on one SQLite file: every job claimed exactly once, in fair order."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime

import pytest

from storage.database import Database
from storage.fair_order import UserKey, Waiting, fair_order
from storage.jobs import Job, JobStatus
from storage.queue import JobQueue
from storage.signals import LocalSignals, Topic
from tests.support.new_jobs import NewJobFactory

pytestmark = pytest.mark.all_databases

USERS = 20
JOBS_PER_USER = 10
CLAIMERS = 4


def key(job: Job) -> UserKey:
    return (job.requester.platform, job.requester.user_id)


def in_claim_order(claims: list[Job]) -> list[Job]:
    """Claims and enqueues read the clock under the write lock, so timestamps order them."""
    sequence = sorted(claims, key=lambda job: job.started_at or datetime.max)
    starts = [job.started_at for job in sequence]
    assert len(set(starts)) == len(starts)
    return sequence


def assert_each_claim_was_the_head_of_fair_order(sequence: list[Job]) -> None:
    """Replay the claims: at each one, the jobs queued then (created earlier, not yet claimed)
    in fair order must start with the job that was claimed."""
    last_started: dict[UserKey, datetime] = {}
    for index, job in enumerate(sequence):
        assert job.started_at is not None
        queued = [
            Waiting(job_id=other.id, user=key(other))
            for other in sequence[index:]
            if other.created_at < job.started_at
        ]
        assert fair_order(queued, last_started)[0] == job.id
        last_started[key(job)] = job.started_at


async def claim_all(db_url: str, name: str) -> list[Job]:
    """One claimer with its own engine and connections, claiming until the queue is empty."""
    database = Database(db_url, busy_timeout_ms=30_000)
    try:
        queue = JobQueue(database, LocalSignals(), max_attempts=2)
        claimed: list[Job] = []
        while (job := await queue.claim_next(name)) is not None:
            claimed.append(job)
        return claimed
    finally:
        await database.close()


async def test_concurrent_claimers_claim_each_job_once_in_fair_order(
    db_url: str, queue: JobQueue, make_new_job: NewJobFactory
) -> None:
    results = await asyncio.gather(
        *(
            queue.enqueue(make_new_job(user_id=f"u{user}", prompt=f"job {n} of u{user}"))
            for n in range(JOBS_PER_USER)
            for user in range(USERS)
        )
    )
    enqueued = {result.job.id: result.job for result in results}
    assert len(enqueued) == USERS * JOBS_PER_USER

    per_claimer = await asyncio.wait_for(
        asyncio.gather(*(claim_all(db_url, f"claimer-{n}") for n in range(CLAIMERS))), timeout=90
    )

    claims = [job for claimed in per_claimer for job in claimed]
    counts = Counter(job.id for job in claims)
    assert set(counts) == set(enqueued) and set(counts.values()) == {1}, "each job claimed exactly once"
    rows = [await queue.get(job_id) for job_id in enqueued]
    assert {row.status for row in rows} == {JobStatus.RUNNING}
    assert {row.claimed_by for row in rows} <= {f"claimer-{n}" for n in range(CLAIMERS)}

    sequence = in_claim_order(claims)

    # Round robin: each run of USERS claims serves every user once, and each user's jobs run FIFO.
    for start in range(0, len(sequence), USERS):
        assert len({key(job) for job in sequence[start : start + USERS]}) == USERS
    for user in {key(job) for job in sequence}:
        ids = [job.id for job in sequence if key(job) == user]
        assert ids == sorted(ids)

    assert_each_claim_was_the_head_of_fair_order(sequence)


async def test_claims_racing_new_jobs_never_duplicate_or_lose_one(
    db_url: str, queue: JobQueue, signals: LocalSignals, make_new_job: NewJobFactory
) -> None:
    """Enqueueing and claiming at the same time, through different engines."""
    total = 60
    stop = asyncio.Event()
    claimed: list[Job] = []

    async def claimer(name: str) -> None:
        database = Database(db_url, busy_timeout_ms=30_000)
        try:
            other = JobQueue(database, LocalSignals(), max_attempts=2)
            while not stop.is_set():
                job = await other.claim_next(name)
                if job is None:
                    # As the claim loop does: wake on the producer's signal, or re-read after a poll.
                    await signals.wait(Topic.QUEUED, timeout=0.05)
                    continue
                claimed.append(job)
                if len(claimed) == total:
                    stop.set()
        finally:
            await database.close()

    async def producer(user: int) -> None:
        for n in range(total // 6):
            await queue.enqueue(make_new_job(user_id=f"p{user}", seed=n))

    claimers = [asyncio.create_task(claimer(f"c{n}")) for n in range(3)]
    await asyncio.gather(*(producer(user) for user in range(6)))
    await asyncio.wait_for(stop.wait(), timeout=60)
    await asyncio.gather(*claimers)
    assert len(claimed) == total and len({job.id for job in claimed}) == total
    assert_each_claim_was_the_head_of_fair_order(in_claim_order(claimed))
    assert await queue.queued_in_fair_order() == []
