"""The per-user limits on active jobs and on jobs per hour hold under any concurrency (SQLite and
PostgreSQL): many connections enqueueing for the same users at once accept exactly `max_active` (or
`max_per_hour`) jobs per user."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from storage.database import Database
from storage.jobs import JobStatus, NewJob
from storage.queue import ActiveLimitReached, HourlyLimitReached, JobQueue
from storage.signals import LocalSignals
from tests.support.new_jobs import NewJobFactory

pytestmark = pytest.mark.all_databases

USERS = 6
COMMANDS_PER_USER = 8
LIMIT = 3
CONNECTIONS = 4


@pytest.mark.parametrize(
    ("limit", "refusal"), [("max_active", ActiveLimitReached), ("max_per_hour", HourlyLimitReached)]
)
async def test_a_burst_accepts_exactly_the_limit_per_user(
    db_url: str, make_new_job: NewJobFactory, limit: str, refusal: type[Exception]
) -> None:
    # Several engines (as several chat processes would have), each enqueueing concurrently.
    databases = [Database(db_url, busy_timeout_ms=30_000) for _ in range(CONNECTIONS)]
    await databases[0].upgrade()
    queues = [JobQueue(db, LocalSignals(), max_attempts=2) for db in databases]
    try:
        commands = [
            NewJob(
                requester=make_new_job(user_id=f"user-{user}").requester,
                request=make_new_job().request,
                **{limit: LIMIT},  # type: ignore[arg-type]
            )
            for _ in range(COMMANDS_PER_USER)
            for user in range(USERS)
        ]
        outcomes = await asyncio.gather(
            *(queues[index % CONNECTIONS].enqueue(command) for index, command in enumerate(commands)),
            return_exceptions=True,
        )
        accepted = Counter(
            outcome.job.requester.user_id for outcome in outcomes if not isinstance(outcome, BaseException)
        )
        refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert all(isinstance(outcome, refusal) for outcome in refused), refused
        assert accepted == {f"user-{user}": LIMIT for user in range(USERS)}
        for user in range(USERS):
            active = await queues[0].active_jobs(commands[0].requester.platform, f"user-{user}")
            assert len(active) == LIMIT
        # A refusal says what holds the slots, or when the hour frees one.
        first = refused[0]
        if isinstance(first, ActiveLimitReached):
            assert first.limit == LIMIT and len(first.active) == LIMIT
        else:
            assert isinstance(first, HourlyLimitReached) and first.limit == LIMIT
    finally:
        for db in databases:
            await db.close()


async def test_a_finished_job_frees_its_slot(queue: JobQueue, make_new_job: NewJobFactory) -> None:
    limited = NewJob(requester=make_new_job().requester, request=make_new_job().request, max_active=1)
    first = await queue.enqueue(limited)
    with pytest.raises(ActiveLimitReached):
        await queue.enqueue(limited)
    await queue.cancel(first.job.id)
    second = await queue.enqueue(limited)
    assert second.created and second.job.status is JobStatus.QUEUED
