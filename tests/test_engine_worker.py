"""The worker process, driven through its supervisor: one real spawned worker with the tiny CPU backend,
shared by every test in this module (spawning imports torch, which takes seconds). Also several images per
job (image i is exactly the single image of seed + i) and image-to-image (the input image and strength
decide the pixels), and the parent's decoding of a stored input image."""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image, ImageStat

from engine.errors import InputImageUnreadable, JobFailed
from engine.messages import (
    CancelJob,
    GenerationRequest,
    JobErrorKind,
    JobSucceeded,
    LoadProgress,
    RawImage,
    RunJob,
    Shutdown,
    StepProgress,
    WorkerReady,
)
from engine.png_metadata import encode_result, majicbot_version, read_metadata
from engine.settings import EngineSettings
from engine.stored_request import generation_request, input_pixels
from engine.supervisor import WorkerSupervisor
from engine.worker import worker_main
from storage.jobs import ImageRequest

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


SIZE = 64


def image_request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(
        prompt="a lighthouse", negative_prompt="", seed=11, steps=3, width=SIZE, height=SIZE, guidance=3.5
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def solid(colour: tuple[int, int, int], size: int = SIZE) -> RawImage:
    return RawImage("RGB", size, size, bytes(colour) * (size * size))


def mean_colour(raw: RawImage) -> tuple[float, float, float]:
    red, green, blue = ImageStat.Stat(Image.frombytes(raw.mode, (raw.width, raw.height), raw.pixels)).mean
    return red, green, blue


async def test_a_job_of_four_images_is_four_single_images_of_consecutive_seeds(
    supervisor: WorkerSupervisor,
) -> None:
    progress: list[StepProgress] = []
    four = await run(supervisor, 1, image_request(count=4), progress)
    assert len(four.images) == 4
    assert [(p.step, p.total) for p in progress] == [(n, 12) for n in range(1, 13)]
    for index, image in enumerate(four.images):
        single = await run(supervisor, 2 + index, image_request(seed=11 + index))
        assert single.images == (image,)
    assert len({image.pixels for image in four.images}) == 4


async def test_the_seeds_of_a_set_wrap_within_32_bits() -> None:
    req = image_request(seed=2**32 - 2, count=4)
    assert [req.image_seed(i) for i in range(4)] == [2**32 - 2, 2**32 - 1, 0, 1]
    assert req.single(2).seed == 0 and req.single(2).count == 1
    with pytest.raises(IndexError):
        req.single(4)


async def test_image_to_image_with_the_same_seed_image_and_strength_gives_identical_pixels(
    supervisor: WorkerSupervisor,
) -> None:
    red = image_request(input_image=solid((255, 0, 0)), strength=0.3)
    first = await run(supervisor, 10, red)
    second = await run(supervisor, 11, red)
    assert first.images == second.images
    other_image = await run(supervisor, 12, replace(red, input_image=solid((0, 0, 255))))
    other_strength = await run(supervisor, 13, replace(red, strength=0.8))
    assert other_image.images != first.images
    assert other_strength.images != first.images


async def test_the_input_image_shows_through_by_the_strength(supervisor: WorkerSupervisor) -> None:
    text_only = (await run(supervisor, 20, image_request())).images[0]
    low = (await run(supervisor, 21, image_request(input_image=solid((255, 0, 0)), strength=0.2))).images[0]
    high = (await run(supervisor, 22, image_request(input_image=solid((255, 0, 0)), strength=0.9))).images[0]
    pattern_red = mean_colour(text_only)[0]
    # The tiny backend blends: red = (1 - strength) * 255 + strength * the pattern's red.
    assert mean_colour(low)[0] == pytest.approx(0.8 * 255 + 0.2 * pattern_red, abs=1.5)
    assert mean_colour(high)[0] == pytest.approx(0.1 * 255 + 0.9 * pattern_red, abs=1.5)
    # Strength 1 ignores the input: exactly text-to-image.
    full = await run(supervisor, 23, image_request(input_image=solid((255, 0, 0)), strength=1.0))
    assert full.images[0] == text_only


async def test_each_png_says_which_image_of_which_job_and_the_strength(supervisor: WorkerSupervisor) -> None:
    req = image_request(count=2, input_image=solid((0, 255, 0)), strength=0.35)
    result = await run(supervisor, 30, req)
    pngs = encode_result(req, result, source_job=7)
    assert len(pngs) == 2
    for index, png in enumerate(pngs):
        meta = read_metadata(png)
        assert (meta.image_index, meta.image_count, meta.source_job) == (index, 2, 7)
        assert meta.request.seed == 11 + index and meta.request.count == 1
        assert meta.request.strength == 0.35 and meta.request.input_image is None
        with Image.open(io.BytesIO(png)) as image:
            assert image.info["image"] == f"{index + 1} of 2"
            assert image.info["source_job"] == "7"
    plain = read_metadata(encode_result(image_request(), await run(supervisor, 31, image_request()))[0])
    assert (plain.source_job, plain.request.strength, plain.image_count) == (None, None, 1)


async def test_requests_out_of_range_are_refused_before_they_reach_a_worker() -> None:
    with pytest.raises(ValueError, match="count is 5"):
        image_request(count=5)
    with pytest.raises(ValueError, match="count is 0"):
        image_request(count=0)
    with pytest.raises(ValueError, match="strength is 0"):
        image_request(input_image=solid((1, 2, 3)), strength=0.0)
    with pytest.raises(ValueError, match="needs a strength"):
        image_request(input_image=solid((1, 2, 3)))
    with pytest.raises(ValueError, match="resize it first"):
        image_request(input_image=solid((1, 2, 3), size=32), strength=0.5)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_a_stored_input_image_is_decoded_and_sized_to_the_request() -> None:
    stored = ImageRequest(prompt="p", seed=1, steps=2, width=128, height=64, guidance=3.5, strength=0.3)
    source = _png(Image.new("RGB", (64, 32), (10, 200, 30)))
    wanted = generation_request(stored, source)
    assert wanted.input_image is not None
    assert (wanted.input_image.width, wanted.input_image.height) == (128, 64)
    assert wanted.strength == 0.3 and wanted.image_to_image
    assert wanted.input_image.pixels[:3] == bytes((10, 200, 30))
    # The same stored image always gives the same pixels.
    assert generation_request(stored, source) == wanted
    grey_alpha = _png(Image.new("LA", (128, 64), (90, 255)))
    assert input_pixels(grey_alpha, 128, 64).pixels[:3] == bytes((90, 90, 90))
    with pytest.raises(InputImageUnreadable, match="cannot be read"):
        generation_request(stored, b"not an image")
    text_only = generation_request(replace(stored, strength=None))
    assert text_only.input_image is None and not text_only.image_to_image
