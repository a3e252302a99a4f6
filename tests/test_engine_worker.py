"""The worker process, driven through its supervisor: one real spawned worker with the tiny CPU backend,
shared by every test in this module (spawning imports torch, which takes seconds)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from engine.errors import JobFailed
from engine.messages import (
    CancelJob,
    GenerationRequest,
    JobErrorKind,
    JobSucceeded,
    LoadProgress,
    RunJob,
    Shutdown,
    StepProgress,
    WorkerReady,
)
from engine.png_metadata import encode_result, majicbot_version, read_metadata
from engine.settings import EngineSettings
from engine.supervisor import WorkerSupervisor
from engine.worker import worker_main

pytestmark = pytest.mark.asyncio(loop_scope="module")

TINY = "tests.support.tiny_backend:create_backend"
BOUND_S = 30  # no single wait in this module may take longer


def request(prompt: str = "a cat", *, seed: int = 1, steps: int = 4, size: int = 64) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt, negative_prompt="", seed=seed, steps=steps, width=size, height=size, guidance=3.5
    )


@pytest.fixture(scope="module")
def counter_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny") / "empty_cache.count"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def supervisor(counter_file: Path) -> AsyncIterator[WorkerSupervisor]:
    settings = EngineSettings(backend=TINY, restart_backoff_s=(0.1, 1.0), load_timeout_s=60)
    with pytest.MonkeyPatch.context() as env:
        # The worker reads these when it is spawned.
        env.setenv("TINY_BACKEND_COUNTER", str(counter_file))
        env.setenv("TINY_BACKEND_STEP_S", "0.2")
        supervisor = WorkerSupervisor(settings, answer_grace_s=5)
        async with asyncio.timeout(60):
            await supervisor.start()
    yield supervisor
    async with asyncio.timeout(BOUND_S):
        await supervisor.stop()


async def run(
    supervisor: WorkerSupervisor,
    job_id: int,
    req: GenerationRequest,
    progress: list[StepProgress] | None = None,
    *,
    timeout_s: float | None = None,
) -> JobSucceeded:
    async with asyncio.timeout(BOUND_S):
        return await supervisor.run(
            job_id, req, None if progress is None else progress.append, timeout_s=timeout_s
        )


async def test_the_worker_protocol_over_raw_pipes() -> None:
    """Without the supervisor: ready, progress 1..N then the result, cancels of other jobs ignored, and
    Shutdown ends the process cleanly."""
    context = multiprocessing.get_context("spawn")
    child_commands, commands = context.Pipe(duplex=False)
    events, child_events = context.Pipe(duplex=False)
    settings = EngineSettings(backend=TINY)
    process = context.Process(
        target=worker_main, args=(settings, child_commands, child_events, logging.WARNING), daemon=True
    )
    await asyncio.to_thread(process.start)
    child_commands.close()
    child_events.close()

    async def receive() -> object:
        if not await asyncio.to_thread(events.poll, BOUND_S):
            raise TimeoutError("the worker sent nothing")
        return events.recv()

    try:
        loading = [await receive(), await receive()]
        assert loading == [LoadProgress("loading tiny model", 0, 1), LoadProgress("loading tiny model", 1, 1)]
        ready = await receive()
        assert isinstance(ready, WorkerReady)
        assert ready.model == "tiny.safetensors"
        commands.send(CancelJob(99))
        commands.send(RunJob(1, request(steps=3), timeout_s=60))
        received = [await receive() for _ in range(4)]
        assert received[:3] == [StepProgress(1, n, 3) for n in (1, 2, 3)]
        assert isinstance(received[3], JobSucceeded)
        assert received[3].job_id == 1
        commands.send(Shutdown())
        await asyncio.to_thread(process.join, BOUND_S)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.kill()
        commands.close()
        events.close()


async def test_readiness_reports_backend_model_strategy_device_and_memory(
    supervisor: WorkerSupervisor,
) -> None:
    ready = supervisor.ready
    assert ready is not None
    assert ready.backend == TINY
    assert ready.model == "tiny.safetensors"
    assert ready.strategy == "resident"
    assert ready.device_name == "Tiny CPU stand-in"
    assert ready.load_seconds > 0
    assert ready.memory.total_on_device == 8 * 2**30
    assert supervisor.pid is not None


async def test_progress_is_reported_for_every_step_in_order(supervisor: WorkerSupervisor) -> None:
    progress: list[StepProgress] = []
    result = await run(supervisor, 1, request(steps=6), progress)
    assert [(p.job_id, p.step, p.total) for p in progress] == [(1, n, 6) for n in range(1, 7)]
    assert result.job_id == 1
    assert (result.images[0].mode, result.images[0].width, result.images[0].height) == ("RGB", 64, 64)
    assert encode_result(request(steps=6), result)[0].startswith(b"\x89PNG\r\n\x1a\n")
    assert result.generate_started < result.generate_finished
    assert result.seconds > 0
    assert 0 < result.step_seconds <= result.seconds


async def test_same_request_and_seed_give_identical_png_bytes(supervisor: WorkerSupervisor) -> None:
    first = await run(supervisor, 2, request("a red fox", seed=42, size=128))
    second = await run(supervisor, 3, request("a red fox", seed=42, size=128))
    other_seed = await run(supervisor, 4, request("a red fox", seed=43, size=128))
    assert first.images == second.images
    assert first.images != other_seed.images
    same = request("a red fox", seed=42, size=128)
    assert encode_result(same, first) == encode_result(same, second)


async def test_png_carries_the_metadata_that_reproduces_it(supervisor: WorkerSupervisor) -> None:
    req = GenerationRequest(
        prompt="ein Fuchs im Schnee, 狐狸", negative_prompt="blurry", seed=7, steps=3, width=96, height=64,
        guidance=4.5,
    )  # fmt: skip
    result = await run(supervisor, 5, req)
    meta = read_metadata(encode_result(req, result)[0])
    assert meta.request == req
    assert meta.model == "tiny.safetensors"
    assert meta.strategy == result.strategy
    assert meta.version == majicbot_version() != ""


async def test_a_job_is_cancelled_between_steps(supervisor: WorkerSupervisor) -> None:
    progress: list[StepProgress] = []

    def on_progress(p: StepProgress) -> None:
        progress.append(p)
        if p.step == 2:
            asyncio.get_running_loop().create_task(supervisor.cancel(6))

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(JobFailed) as failed:
        async with asyncio.timeout(BOUND_S):
            await supervisor.run(6, request("slowly [slow]", steps=50), on_progress)
    assert failed.value.kind is JobErrorKind.CANCELLED
    assert 2 <= progress[-1].step < 10
    assert loop.time() - started < 50 * 0.2 / 2
    # The worker is still the same process and takes the next job.
    assert (await run(supervisor, 7, request())).job_id == 7


async def test_cancel_for_another_job_changes_nothing(supervisor: WorkerSupervisor) -> None:
    await supervisor.cancel(12345)
    assert (await run(supervisor, 8, request())).job_id == 8


async def test_a_job_past_its_deadline_is_stopped_with_timeout(supervisor: WorkerSupervisor) -> None:
    pid = supervisor.pid
    with pytest.raises(JobFailed) as failed:
        await run(supervisor, 9, request("forever [slow]", steps=100), timeout_s=0.5)
    assert failed.value.kind is JobErrorKind.TIMEOUT
    assert "engine.job_timeout_s" in failed.value.message
    assert supervisor.pid == pid  # stopped between steps; no kill needed


async def test_a_backend_error_fails_the_job_and_the_worker_goes_on(supervisor: WorkerSupervisor) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(supervisor, 10, request("[boom]"))
    assert failed.value.kind is JobErrorKind.ERROR
    assert "ValueError: boom" in failed.value.message
    assert (await run(supervisor, 11, request())).job_id == 11


async def test_out_of_memory_retries_once_with_a_lower_memory_strategy(supervisor: WorkerSupervisor) -> None:
    before = supervisor.ready
    assert before is not None
    progress: list[StepProgress] = []
    result = await run(supervisor, 12, request("tight [oom]", steps=3), progress)
    assert result.strategy != "resident"
    [png] = encode_result(request("tight [oom]", steps=3), result)
    assert read_metadata(png).strategy == result.strategy
    # Progress restarts with the retry: step 1 of the failed attempt, then 1..3 of the second.
    assert [p.step for p in progress] == [1, 1, 2, 3]


async def test_an_out_of_memory_error_is_recognised_by_name_and_as_a_cause(
    supervisor: WorkerSupervisor,
) -> None:
    result = await run(supervisor, 15, request("[oom-wrapped]"))
    assert result.job_id == 15


async def test_out_of_memory_twice_fails_with_a_message_people_understand(
    supervisor: WorkerSupervisor,
) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(supervisor, 13, request("too big [oom2]", size=128))
    assert failed.value.kind is JobErrorKind.OUT_OF_MEMORY
    assert "ran out of memory at 128x128" in failed.value.message
    assert "Try a smaller size" in failed.value.message
    assert (await run(supervisor, 14, request())).job_id == 14


@pytest.mark.parametrize("prompt", ["fine", "[boom]", "[oom2]", "cancel me [slow]"])
async def test_the_cuda_cache_is_cleared_after_every_job(
    supervisor: WorkerSupervisor, counter_file: Path, prompt: str
) -> None:
    job_id = 100 + len(prompt)
    before = await asyncio.to_thread(lambda: counter_file.stat().st_size)

    def on_progress(p: StepProgress) -> None:
        asyncio.get_running_loop().create_task(supervisor.cancel(job_id))

    try:
        async with asyncio.timeout(BOUND_S):
            await supervisor.run(
                job_id, request(prompt, steps=20), on_progress if "cancel" in prompt else None
            )
    except JobFailed:
        pass
    # The worker clears the cache before it answers, so the count is final here.
    assert await asyncio.to_thread(lambda: counter_file.stat().st_size) > before


async def test_the_event_loop_is_never_blocked_while_the_worker_runs(supervisor: WorkerSupervisor) -> None:
    loop = asyncio.get_running_loop()
    interval = 0.005
    worst = 0.0
    job = loop.create_task(supervisor.run(20, request("big and busy", steps=12, size=1024), lambda p: None))
    async with asyncio.timeout(BOUND_S):
        while not job.done():
            before = loop.time()
            await asyncio.sleep(interval)
            worst = max(worst, loop.time() - before - interval)
    result = job.result()
    assert len(result.images[0].pixels) == 1024 * 1024 * 3  # a large message crossed the pipe meanwhile
    print(f"worst event loop lag while the worker ran: {worst * 1000:.1f} ms")
    assert worst < 0.05, f"the event loop was blocked for {worst * 1000:.0f} ms"
