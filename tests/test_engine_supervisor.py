"""The supervisor around a real worker process: start failures, a killed or hung worker, stopping, and
`generate_images`. Workers are killed here, so this module has its own."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from engine.errors import EngineStartError, EngineStopped, JobFailed, WorkerDied
from engine.generate import generate_images
from engine.messages import GenerationRequest, JobErrorKind, LoadProgress, StepProgress, WorkerReady
from engine.png_metadata import read_metadata
from engine.settings import EngineSettings
from engine.supervisor import WorkerSupervisor
from storage.jobs import ImageRequest

pytestmark = pytest.mark.asyncio(loop_scope="module")

TINY = "tests.support.tiny_backend:create_backend"
BOUND_S = 30


def settings(backend: str = TINY, **overrides: object) -> EngineSettings:
    values: dict[str, object] = {"backend": backend, "restart_backoff_s": (0.05, 0.5), "load_timeout_s": 60}
    values.update(overrides)
    return EngineSettings.model_validate(values)


def request(prompt: str = "a cat", *, steps: int = 4) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, negative_prompt="", seed=3, steps=steps, width=64, height=64, guidance=3.5
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def supervisor() -> AsyncIterator[WorkerSupervisor]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TINY_BACKEND_STEP_S", "0.2")
        supervisor = WorkerSupervisor(settings(), answer_grace_s=1.0)
        async with asyncio.timeout(60):
            await supervisor.start()
    yield supervisor
    async with asyncio.timeout(BOUND_S):
        await supervisor.stop()


async def test_a_killed_worker_fails_its_job_and_is_restarted(supervisor: WorkerSupervisor) -> None:
    first_pid = supervisor.pid
    assert first_pid is not None

    def kill_at_step_2(p: StepProgress) -> None:
        if p.step == 2:
            os.kill(first_pid, signal.SIGKILL)

    with pytest.raises(WorkerDied) as died:
        async with asyncio.timeout(BOUND_S):
            await supervisor.run(1, request("[slow]", steps=50), kill_at_step_2)
    assert "killed by signal SIGKILL" in died.value.reason
    async with asyncio.timeout(BOUND_S):
        result = await supervisor.run(2, request())
    assert result.job_id == 2
    assert supervisor.pid not in (None, first_pid)


async def test_a_worker_that_kills_itself_mid_job_is_restarted(supervisor: WorkerSupervisor) -> None:
    with pytest.raises(WorkerDied):
        async with asyncio.timeout(BOUND_S):
            await supervisor.run(3, request("[crash]"))
    async with asyncio.timeout(BOUND_S):
        assert (await supervisor.run(4, request())).job_id == 4


async def test_a_hung_worker_is_killed_after_the_deadline_and_grace(supervisor: WorkerSupervisor) -> None:
    pid = supervisor.pid
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(JobFailed) as failed:
        async with asyncio.timeout(BOUND_S):
            await supervisor.run(5, request("[hang]"), timeout_s=0.5)
    assert failed.value.kind is JobErrorKind.TIMEOUT
    assert "killed" in failed.value.message
    assert loop.time() - started < 0.5 + 1.0 + 2.0
    async with asyncio.timeout(BOUND_S):
        assert (await supervisor.run(6, request())).job_id == 6
    assert supervisor.pid != pid


async def test_a_cancel_the_worker_ignores_gets_it_killed(supervisor: WorkerSupervisor) -> None:
    def cancel_at_step_1(p: StepProgress) -> None:
        asyncio.get_running_loop().create_task(supervisor.cancel(7))

    # [hang] blocks inside step 1, after its progress report: the cancel can only be enforced by a kill.
    with pytest.raises(JobFailed) as failed:
        async with asyncio.timeout(BOUND_S):
            await supervisor.run(7, request("[hang]"), cancel_at_step_1)
    assert failed.value.kind is JobErrorKind.CANCELLED
    async with asyncio.timeout(BOUND_S):
        assert (await supervisor.run(8, request())).job_id == 8


async def test_one_job_at_a_time(supervisor: WorkerSupervisor) -> None:
    first = asyncio.get_running_loop().create_task(supervisor.run(9, request("[slow]", steps=3)))
    await asyncio.sleep(0)  # let it register
    with pytest.raises(RuntimeError, match="one job at a time"):
        await supervisor.run(10, request())
    async with asyncio.timeout(BOUND_S):
        assert (await first).job_id == 9


async def test_a_malformed_backend_setting_fails_before_spawning() -> None:
    with pytest.raises(EngineStartError, match=r'set it to "diffsynth" or to an import path'):
        await WorkerSupervisor(settings("not a path")).start()


async def test_a_backend_that_cannot_be_imported_says_so() -> None:
    supervisor = WorkerSupervisor(settings("no_such_package.backend:create"))
    try:
        with pytest.raises(EngineStartError, match="could not be imported") as failed:
            async with asyncio.timeout(BOUND_S):
                await supervisor.start()
        assert "no_such_package" in str(failed.value)
    finally:
        await supervisor.stop()


async def test_missing_model_files_say_which_and_what_to_run(tmp_path: Path) -> None:
    supervisor = WorkerSupervisor(
        settings("tests.support.tiny_backend:create_backend_missing_model", model_dir=tmp_path)
    )
    try:
        with pytest.raises(EngineStartError) as failed:
            async with asyncio.timeout(BOUND_S):
                await supervisor.start()
        message = str(failed.value)
        assert str(tmp_path / "majicflus_v134.safetensors") in message
        assert "majicbot download" in message
    finally:
        await supervisor.stop()


async def test_stop_cancels_the_running_job_and_then_refuses_work() -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TINY_BACKEND_STEP_S", "0.2")
        supervisor = WorkerSupervisor(settings())
        async with asyncio.timeout(60):
            await supervisor.start()
    started = asyncio.Event()
    job = asyncio.get_running_loop().create_task(
        supervisor.run(1, request("[slow]", steps=100), lambda p: started.set())
    )
    async with asyncio.timeout(BOUND_S):
        await started.wait()
        await supervisor.stop(timeout=10)
        with pytest.raises(JobFailed) as failed:
            await job
    assert failed.value.kind is JobErrorKind.CANCELLED
    assert supervisor.pid is None
    with pytest.raises(EngineStopped):
        await supervisor.run(2, request())


async def test_generate_images_makes_one_png_with_progress() -> None:
    steps: list[int] = []
    ready: list[WorkerReady] = []
    async with asyncio.timeout(60):
        [png] = await generate_images(
            settings(),
            ImageRequest(prompt="a lighthouse", seed=3, steps=5, width=64, height=64, guidance=3.5),
            lambda p: steps.append(p.step),
            on_ready=ready.append,
        )
    assert steps == [1, 2, 3, 4, 5]
    assert ready[0].model == "tiny.safetensors"
    assert read_metadata(png).request.prompt == "a lighthouse"


async def test_loading_progress_reaches_the_caller_before_the_worker_is_ready() -> None:
    reports: list[LoadProgress] = []
    ready: list[WorkerReady] = []
    async with asyncio.timeout(60):
        await generate_images(
            settings(),
            ImageRequest(prompt="a kite", seed=3, steps=1, width=64, height=64, guidance=3.5),
            on_ready=ready.append,
            on_load_progress=reports.append,
        )
    assert [(r.stage, r.done, r.total) for r in reports] == [
        ("loading tiny model", 0, 1),
        ("loading tiny model", 1, 1),
    ]
    assert ready


async def test_a_size_the_gpu_cannot_hold_is_refused_before_its_steps(supervisor: WorkerSupervisor) -> None:
    steps: list[int] = []
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(JobFailed) as failed:
            await supervisor.run(11, request("a whale [too-large]"), lambda p: steps.append(p.step))
        assert failed.value.kind is JobErrorKind.TOO_LARGE
        assert "does not fit this GPU" in failed.value.message
        done = await supervisor.run(12, request())  # the worker lives on
    assert steps == [1] and done.job_id == 12
