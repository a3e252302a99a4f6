"""Several images per job and image-to-image through the real worker process (tiny CPU backend): image i
is exactly the single image of seed + i, progress counts every image's steps, the input image and the
strength decide the pixels (the same ones give the same pixels), and each PNG says which image of which
job it is. Plus the request's own rules and the parent's decoding of a stored input image."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio
from PIL import Image, ImageStat

from engine.errors import InputImageUnreadable
from engine.messages import GenerationRequest, JobSucceeded, RawImage, StepProgress
from engine.png_metadata import encode_result, read_metadata
from engine.settings import EngineSettings
from engine.stored_request import generation_request, input_pixels
from engine.supervisor import WorkerSupervisor
from storage.jobs import ImageRequest

pytestmark = pytest.mark.asyncio(loop_scope="module")

BOUND_S = 30
SIZE = 64


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def supervisor() -> AsyncIterator[WorkerSupervisor]:
    settings = EngineSettings(
        backend="tests.support.tiny_backend:create_backend", restart_backoff_s=(0.1, 1.0), load_timeout_s=60
    )
    supervisor = WorkerSupervisor(settings, answer_grace_s=5)
    async with asyncio.timeout(60):
        await supervisor.start()
    yield supervisor
    async with asyncio.timeout(BOUND_S):
        await supervisor.stop()


def request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(
        prompt="a lighthouse", negative_prompt="", seed=11, steps=3, width=SIZE, height=SIZE, guidance=3.5
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def solid(colour: tuple[int, int, int], size: int = SIZE) -> RawImage:
    return RawImage("RGB", size, size, bytes(colour) * (size * size))


def mean_colour(raw: RawImage) -> tuple[float, float, float]:
    red, green, blue = ImageStat.Stat(Image.frombytes(raw.mode, (raw.width, raw.height), raw.pixels)).mean
    return red, green, blue


async def run(
    supervisor: WorkerSupervisor,
    job_id: int,
    req: GenerationRequest,
    progress: list[StepProgress] | None = None,
) -> JobSucceeded:
    async with asyncio.timeout(BOUND_S):
        return await supervisor.run(job_id, req, None if progress is None else progress.append)


async def test_a_job_of_four_images_is_four_single_images_of_consecutive_seeds(
    supervisor: WorkerSupervisor,
) -> None:
    progress: list[StepProgress] = []
    four = await run(supervisor, 1, request(count=4), progress)
    assert len(four.images) == 4
    assert [(p.step, p.total) for p in progress] == [(n, 12) for n in range(1, 13)]
    for index, image in enumerate(four.images):
        single = await run(supervisor, 2 + index, request(seed=11 + index))
        assert single.images == (image,)
    assert len({image.pixels for image in four.images}) == 4


async def test_the_seeds_of_a_set_wrap_within_32_bits() -> None:
    req = request(seed=2**32 - 2, count=4)
    assert [req.image_seed(i) for i in range(4)] == [2**32 - 2, 2**32 - 1, 0, 1]
    assert req.single(2).seed == 0 and req.single(2).count == 1
    with pytest.raises(IndexError):
        req.single(4)


async def test_image_to_image_with_the_same_seed_image_and_strength_gives_identical_pixels(
    supervisor: WorkerSupervisor,
) -> None:
    red = request(input_image=solid((255, 0, 0)), strength=0.3)
    first = await run(supervisor, 10, red)
    second = await run(supervisor, 11, red)
    assert first.images == second.images
    other_image = await run(supervisor, 12, replace(red, input_image=solid((0, 0, 255))))
    other_strength = await run(supervisor, 13, replace(red, strength=0.8))
    assert other_image.images != first.images
    assert other_strength.images != first.images


async def test_the_input_image_shows_through_by_the_strength(supervisor: WorkerSupervisor) -> None:
    text_only = (await run(supervisor, 20, request())).images[0]
    low = (await run(supervisor, 21, request(input_image=solid((255, 0, 0)), strength=0.2))).images[0]
    high = (await run(supervisor, 22, request(input_image=solid((255, 0, 0)), strength=0.9))).images[0]
    pattern_red = mean_colour(text_only)[0]
    # The tiny backend blends: red = (1 - strength) * 255 + strength * the pattern's red.
    assert mean_colour(low)[0] == pytest.approx(0.8 * 255 + 0.2 * pattern_red, abs=1.5)
    assert mean_colour(high)[0] == pytest.approx(0.1 * 255 + 0.9 * pattern_red, abs=1.5)
    # Strength 1 ignores the input: exactly text-to-image.
    full = await run(supervisor, 23, request(input_image=solid((255, 0, 0)), strength=1.0))
    assert full.images[0] == text_only


async def test_each_png_says_which_image_of_which_job_and_the_strength(supervisor: WorkerSupervisor) -> None:
    req = request(count=2, input_image=solid((0, 255, 0)), strength=0.35)
    result = await run(supervisor, 30, req)
    pngs = encode_result(req, result, source_job=7)
    assert len(pngs) == 2
    for index, png in enumerate(pngs):
        meta = read_metadata(png)
        assert (meta.image_index, meta.image_count, meta.source_job) == (index, 2, 7)
        assert meta.request.seed == 11 + index and meta.request.count == 1
        assert meta.request.strength == 0.35 and meta.request.input_image is None
        with Image.open(io.BytesIO(png)) as image:
            assert image.text["image"] == f"{index + 1} of 2"
            assert image.text["source_job"] == "7"
    plain = read_metadata(encode_result(request(), await run(supervisor, 31, request()))[0])
    assert (plain.source_job, plain.request.strength, plain.image_count) == (None, None, 1)


async def test_requests_out_of_range_are_refused_before_they_reach_a_worker() -> None:
    with pytest.raises(ValueError, match="count is 5"):
        request(count=5)
    with pytest.raises(ValueError, match="count is 0"):
        request(count=0)
    with pytest.raises(ValueError, match="strength is 0"):
        request(input_image=solid((1, 2, 3)), strength=0.0)
    with pytest.raises(ValueError, match="needs a strength"):
        request(input_image=solid((1, 2, 3)))
    with pytest.raises(ValueError, match="resize it first"):
        request(input_image=solid((1, 2, 3), size=32), strength=0.5)


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
