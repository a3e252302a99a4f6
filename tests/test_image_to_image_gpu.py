"""Image-to-image and several images per job through the DiffSynth backend on a real GPU: the same seed,
image and strength give identical pixels; a job of four images gives exactly the four single images of
seeds seed..seed+3; a 2048x2048 input is encoded (in tiles) and refined.

Marked `gpu`; needs the full-size model set (`bench/make_synthetic_flux.py --out DIR --dit-dtype fp8`)
named by MAJICBOT_GPU_MODEL_DIR. Run on the device: `pytest -m gpu tests/test_image_to_image_gpu.py`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from engine.messages import GenerationRequest, JobSucceeded, RawImage
from engine.settings import EngineSettings
from engine.supervisor import WorkerSupervisor

MODEL_DIR = os.environ.get("MAJICBOT_GPU_MODEL_DIR", "")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not MODEL_DIR, reason="set MAJICBOT_GPU_MODEL_DIR to a full-size model set"),
]
SIDE = 256
STEPS = 2


@dataclass
class Engine:
    """One worker for the module, driven from plain tests (the device has no pytest-asyncio)."""

    loop: asyncio.AbstractEventLoop
    supervisor: WorkerSupervisor

    def run(self, job_id: int, request: GenerationRequest) -> JobSucceeded:
        async def bounded() -> JobSucceeded:
            async with asyncio.timeout(600):
                return await self.supervisor.run(job_id, request, timeout_s=600)

        return self.loop.run_until_complete(bounded())


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    loop = asyncio.new_event_loop()
    supervisor = WorkerSupervisor(EngineSettings(model_dir=Path(MODEL_DIR)), answer_grace_s=30)
    try:
        loop.run_until_complete(asyncio.wait_for(supervisor.start(), 900))
        yield Engine(loop, supervisor)
    finally:
        loop.run_until_complete(supervisor.stop(timeout=60))
        loop.close()


def gradient(side: int) -> RawImage:
    """A picture with structure (not one flat colour), so the encoder has something to keep."""
    from PIL import Image

    across = Image.linear_gradient("L").resize((side, side))
    rings = Image.radial_gradient("L").resize((side, side))
    picture = Image.merge("RGB", (across, across.transpose(Image.Transpose.ROTATE_90), rings))
    return RawImage("RGB", side, side, picture.tobytes())


def base(**changes: object) -> GenerationRequest:
    request = GenerationRequest("a lighthouse on a cliff", "", 1234, STEPS, SIDE, SIDE, 3.5)
    return replace(request, **changes)  # type: ignore[arg-type]


def test_the_same_seed_image_and_strength_give_identical_pixels(engine: Engine) -> None:
    request = base(input_image=gradient(SIDE), strength=0.5)
    first = engine.run(1, request)
    second = engine.run(2, request)
    assert first.images == second.images
    other_strength = engine.run(3, replace(request, strength=0.9))
    text_only = engine.run(4, base())
    assert other_strength.images != first.images
    assert text_only.images != first.images


def test_four_images_are_the_single_images_of_consecutive_seeds(engine: Engine) -> None:
    four = engine.run(10, base(count=4))
    assert len(four.images) == 4
    for index in range(4):
        single = engine.run(11 + index, base(seed=1234 + index))
        assert single.images == (four.images[index],), f"image {index} differs from seed {1234 + index}"
    # The same for image-to-image, whose input is encoded once for the set.
    start = gradient(SIDE)
    pair = engine.run(20, base(count=2, input_image=start, strength=0.6))
    second = engine.run(21, base(seed=1235, input_image=start, strength=0.6))
    assert pair.images[1] == second.images[0]


def test_a_2048_square_input_is_encoded_and_refined(engine: Engine) -> None:
    big = replace(base(), width=2048, height=2048, steps=1, input_image=gradient(2048), strength=0.3)
    done = engine.run(30, big)
    assert (done.images[0].width, done.images[0].height) == (2048, 2048)
