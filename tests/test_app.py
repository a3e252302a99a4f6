"""Application: the real database, recovery, worker process (tiny CPU backend), claim loop and delivery,
with the in-memory front end standing in for a chat platform."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import Application, ApplicationError
from bot.command_parser import ImagineArgs
from bot.config import Config
from bot.settings import LimitsSettings
from bot.telegram import TELEGRAM
from engine.errors import EngineStartError
from storage.database import Database
from storage.jobs import JobStatus, Requester
from storage.queue import JobQueue
from storage.signals import LocalSignals
from tests.support.app_harness import tiny_app_config
from tests.support.memory_frontend import MemoryFrontend
from tests.support.new_jobs import build_new_job

TINY = "tests.support.tiny_backend:create_backend"
REPO = Path(__file__).resolve().parent.parent
START_S = 90.0  # the worker imports torch on a shared 2-core machine
ALICE = Requester(TELEGRAM, chat_id="100", user_id="1", user_name="alice")


def make_config(tmp_path: Path, backend: str = TINY) -> Config:
    return tiny_app_config(tmp_path, backend=backend, limits=LimitsSettings())


class Running:
    """An Application running in a task, with its stop event."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(app.run(self.stop))

    async def shut_down(self) -> None:
        self.stop.set()
        async with asyncio.timeout(30):
            await self.task


@pytest.fixture
async def seeded_database(tmp_path: Path) -> AsyncIterator[JobQueue]:
    """The app's database with a queue on it, before the app starts (as a previous run left it)."""
    database = Database(make_config(tmp_path).storage.database_url)
    await database.upgrade()
    try:
        yield JobQueue(database, LocalSignals(), max_attempts=2)
    finally:
        await database.close()


def test_refuses_to_run_chat_without_an_adapter(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as caught:
        Application(make_config(tmp_path))
    assert str(caught.value) == (
        "no chat adapter is configured: set discord.token or telegram.token in the config file "
        "(or MAJICBOT_DISCORD_TOKEN / MAJICBOT_TELEGRAM_TOKEN in the environment)"
    )


async def test_runs_jobs_end_to_end_and_recovers_what_a_crash_left(
    tmp_path: Path, seeded_database: JobQueue
) -> None:
    config = make_config(tmp_path)
    frontend = MemoryFrontend()
    app = Application(config, frontends=lambda service: [frontend])
    # A previous run of this host crashed with a job running.
    left = (await seeded_database.enqueue(build_new_job(prompt="left running", width=256, height=256))).job
    assert await seeded_database.claim_next(app.claimer) is not None

    running = Running(app)
    try:
        async with asyncio.timeout(START_S):
            await app.started()
        assert frontend.started
        requeued = await app.queue.get(left.id)
        assert requeued.attempts == 1
        queued = await app.service.imagine(
            # [slow]: 0.2 s a step in the tiny backend, long enough to be seen running.
            ALICE,
            ImagineArgs("a tiny lighthouse [slow]", steps=3, width=256, height=256),
        )
        presenter = frontend.presenter
        await presenter.wait_until(lambda: len(presenter.of("deliver")) == 2)
        assert {call.job_id for call in presenter.of("deliver")} == {left.id, queued.job.id}
        job = await app.queue.get(queued.job.id)
        assert job.status is JobStatus.DONE
        png = await app.service.image_bytes(job)
        assert png.startswith(b"\x89PNG")
        assert any(call.status is JobStatus.RUNNING for call in presenter.of("progress", job.id)), [
            (c.kind, c.job_id, c.status.value, c.step) for c in presenter.calls
        ]
    finally:
        await running.shut_down()
    assert frontend.stopped
    delivered = await seeded_database.get(queued.job.id)
    assert delivered.delivered_at is not None
    assert delivered.result_message_id == f"message-{queued.job.id}"


async def test_missing_model_files_stop_the_application_before_anything_starts(tmp_path: Path) -> None:
    frontend = MemoryFrontend()
    app = Application(make_config(tmp_path, "diffsynth"), frontends=lambda service: [frontend])
    running = Running(app)
    with pytest.raises(ApplicationError, match="stopped before it finished starting"):
        async with asyncio.timeout(START_S):
            await app.started()
    with pytest.raises(EngineStartError, match=r"majicflus_v134\.safetensors") as caught:
        async with asyncio.timeout(30):
            await running.task
    assert "majicbot download" in str(caught.value)
    assert not frontend.started


async def test_a_worker_that_cannot_load_stops_the_application(tmp_path: Path) -> None:
    """Loading runs while the adapters start; a load that fails later still ends the run, cleanly."""
    frontend = MemoryFrontend()
    app = Application(
        make_config(tmp_path, "tests.support.tiny_backend:create_backend_missing_model"),
        frontends=lambda service: [frontend],
    )
    running = Running(app)
    with pytest.raises(ApplicationError, match=r"engine failed: .*majicflus_v134\.safetensors"):
        async with asyncio.timeout(START_S):
            await running.task
    assert frontend.started
    assert frontend.stopped


async def test_chat_only_host_delivers_and_leaves_running_jobs_to_their_host(
    tmp_path: Path, seeded_database: JobQueue
) -> None:
    other_hosts = (await seeded_database.enqueue(build_new_job(prompt="elsewhere"))).job
    assert await seeded_database.claim_next("gpu-host/cuda:0") is not None
    cancelled = (await seeded_database.enqueue(build_new_job(prompt="cancelled", user_id="2"))).job
    await seeded_database.cancel(cancelled.id)

    frontend = MemoryFrontend()
    app = Application(make_config(tmp_path), with_engine=False, frontends=lambda service: [frontend])
    running = Running(app)
    try:
        async with asyncio.timeout(START_S):
            await app.started()
        presenter = frontend.presenter
        await presenter.wait_until(lambda: bool(presenter.of("cancelled", cancelled.id)))
        await presenter.wait_until(lambda: bool(presenter.of("progress", other_hosts.id)))
        assert (await app.queue.get(other_hosts.id)).status is JobStatus.RUNNING
    finally:
        await running.shut_down()


async def test_a_frontend_that_fails_to_start_is_reported_and_the_rest_shut_down(tmp_path: Path) -> None:
    class Refused(MemoryFrontend):
        async def start(self) -> None:
            from bot.frontend import FrontendStartError

            raise FrontendStartError("Telegram rejected the token: check telegram.token.")

    frontend = Refused()
    app = Application(make_config(tmp_path), with_engine=False, frontends=lambda service: [frontend])
    stop = asyncio.Event()
    with pytest.raises(Exception, match="Telegram rejected the token"):
        async with asyncio.timeout(30):
            await app.run(stop)
    # It was registered for shutdown before it started, so a half-started adapter is stopped too.
    assert frontend.stopped


CHILD = """
import asyncio, json, sys
from pathlib import Path
from bot.app import Application
from bot.command_parser import ImagineArgs
from bot.telegram import TELEGRAM
from storage.jobs import Requester
from tests.support.app_harness import tiny_app_config
from tests.support.memory_frontend import MemoryFrontend
from tests.test_app import make_config

async def main() -> None:
    frontend = MemoryFrontend()
    app = Application(make_config(Path(sys.argv[1])), frontends=lambda service: [frontend])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    async with asyncio.timeout(90):
        await app.started()
        requester = Requester(TELEGRAM, chat_id="1", user_id="1", user_name="u")
        await app.service.imagine(requester, ImagineArgs("a cat", steps=2, width=256, height=256))
        await frontend.presenter.wait_until(lambda: bool(frontend.presenter.of("deliver")))
    imported = sorted(name for name in ("torch", "diffsynth") if name in sys.modules)
    stop.set()
    await asyncio.wait_for(task, 30)
    print(json.dumps({"imported": imported}))

asyncio.run(main())
"""


def test_the_chat_process_never_imports_torch(tmp_path: Path) -> None:
    # A fresh interpreter: other tests in this process import torch on purpose.
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"imported": []}


def test_claimer_name_is_stable_per_host_and_device(tmp_path: Path) -> None:
    app = Application(make_config(tmp_path), frontends=lambda service: [])
    assert app.claimer == f"{socket.gethostname()}/cpu"


async def test_a_fatal_platform_error_ends_the_application_with_its_reason(tmp_path: Path) -> None:
    frontend = MemoryFrontend()
    app = Application(make_config(tmp_path), with_engine=False, frontends=lambda service: [frontend])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    async with asyncio.timeout(30):
        await app.started()
        frontend.fail("the token was revoked; set a new one and restart.")
        with pytest.raises(ApplicationError, match="the token was revoked"):
            await task
    assert frontend.stopped
