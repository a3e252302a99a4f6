"""`majicbot engine --devices`: one engine per device from one command, each with its own worker process
and claimer name, as a real process (tiny backend; the devices are CPU stand-ins)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bot.cli import parse_devices
from storage.jobs import JobStatus
from storage.queue import JobQueue
from tests.support.new_jobs import NewJobFactory
from tests.support.processes import MajicbotProcess, write_config
from tests.support.telegram_harness import until


def test_device_lists_name_cuda_devices_by_number() -> None:
    assert parse_devices("0,1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cuda:2, cpu") == ["cuda:2", "cpu"]
    with pytest.raises(argparse.ArgumentTypeError, match="named twice"):
        parse_devices("0,cuda:0")
    with pytest.raises(argparse.ArgumentTypeError, match="at least one"):
        parse_devices(" , ")


async def test_one_command_runs_an_engine_per_device(
    db_url: str, queue: JobQueue, tmp_path: Path, make_new_job: NewJobFactory
) -> None:
    jobs = [
        (await queue.enqueue(make_new_job(user_id=str(user), prompt="[slow] twin", steps=6))).job
        for user in range(4)
    ]
    config = write_config(tmp_path / "devices.toml", database_url=db_url, data_dir=tmp_path / "data")
    engine = await MajicbotProcess.start(
        "engines",
        "engine",
        "--devices",
        "cpu:0,cpu:1",
        config=config,
        log_dir=tmp_path,
        env={"TINY_BACKEND_STEP_S": "0.3"},
    )
    try:
        await engine.wait_for_line("claim loop", count=2, within_s=90)

        async def both_devices_busy() -> bool:
            return {job.claimed_by.rsplit("/", 1)[1] for job in await queue.running() if job.claimed_by} == {
                "cpu:0",
                "cpu:1",
            }

        await until(both_devices_busy, within_s=60, what="both engines running a job")
        log = engine.text()
        workers = {
            line.split("worker pid ", 1)[1].split()[0] for line in log.splitlines() if "worker pid " in line
        }
        assert len(workers) == 2, "each engine has its own worker process"

        async def all_done() -> bool:
            return all([(await queue.get(job.id)).status is JobStatus.DONE for job in jobs])

        await until(all_done, within_s=60, what="every job done")
        claimers = {(await queue.get(job.id)).claimed_by for job in jobs}
        assert {name.rsplit("/", 1)[1] for name in claimers if name} == {"cpu:0", "cpu:1"}
    finally:
        assert await engine.stop() == 0, engine.text()
