"""A small, real torch-on-CPU backend, so tests run the real worker process without a GPU.

`engine.backend = "tests.support.tiny_backend:create_backend"`. It draws seeded noise at 1/8 of the
requested size, runs a few cheap convolutions per step and upsamples: deterministic per (request, seed).
Image i of a request uses seed + i (`request.single(i)`). With an input image the result is the input
blended with that pattern by the strength (`Image.blend(input, pattern, strength)`), so tests can tell
which image and strength were used.

Words in the prompt steer it, for tests (the control word stays part of the prompt, as a user would type):
  [slow]   each step sleeps TINY_BACKEND_STEP_S seconds (default 0.2): long enough to cancel or time out
  [boom]   raises ValueError at step 1
  [oom]    raises torch.cuda.OutOfMemoryError at step 1 of the first attempt only
  [oom2]   raises torch.cuda.OutOfMemoryError at step 1 of every attempt
  [oom-wrapped]  like [oom], as the cause of a RuntimeError, from a class that is only named OutOfMemoryError
  [crash]  SIGKILLs its own process at step 1
  [hang]   sleeps an hour at step 1 without calling on_step again
  [too-large]  refuses the request at step 1, as a backend does for a size the GPU cannot hold

A GPU cannot exist here, so the factory replaces torch.cuda's memory functions in the worker process with
fakes; each `empty_cache` call appends one byte to the file named by TINY_BACKEND_COUNTER (if set).
`create_backend_missing_model` fails to load the way a backend with missing model files does.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backend import LoadReporter, StepCallback
from engine.errors import RequestTooLarge
from engine.messages import GenerationRequest
from engine.settings import EngineSettings

if TYPE_CHECKING:
    from PIL.Image import Image

STRATEGIES = ("resident", "offload", "sequential", "streaming")
FAKE_TOTAL = 8 * 2**30
FAKE_RESERVED = 512 * 2**20


def _install_fake_cuda(counter: Path | None) -> None:
    import torch

    def empty_cache() -> None:
        if counter is not None:
            with counter.open("ab") as f:
                f.write(b".")

    fakes: dict[str, Any] = {
        "is_available": lambda: True,
        "empty_cache": empty_cache,
        "memory_allocated": lambda device=None: FAKE_RESERVED // 2,
        "memory_reserved": lambda device=None: FAKE_RESERVED,
        "max_memory_reserved": lambda device=None: 2 * FAKE_RESERVED,
        "mem_get_info": lambda device=None: (FAKE_TOTAL - FAKE_RESERVED, FAKE_TOTAL),
        "get_device_name": lambda device=None: "Tiny CPU stand-in",
        "reset_peak_memory_stats": lambda device=None: None,
    }
    for name, fake in fakes.items():
        setattr(torch.cuda, name, fake)


class TinyBackend:
    def __init__(self, settings: EngineSettings) -> None:
        import torch

        torch.set_num_threads(1)  # the test machine's cores are shared; one is plenty at 1/8 size
        self._torch = torch
        weights = torch.Generator().manual_seed(1234)
        self._mix = torch.randn(4, 4, 3, 3, generator=weights) * 0.2
        self._to_rgb = torch.randn(3, 4, 1, 1, generator=weights)
        self._strategy = 0
        self._oom_pending: GenerationRequest | None = None
        self._step_s = float(os.environ.get("TINY_BACKEND_STEP_S", "0.2"))

    def describe(self) -> tuple[str, str]:
        return "tiny.safetensors", STRATEGIES[self._strategy]

    def reduce_memory(self) -> bool:
        if self._strategy + 1 >= len(STRATEGIES):
            return False
        self._strategy += 1
        return True

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image]:
        total = request.total_steps
        images = []
        for index in range(request.count):
            done = index * request.steps

            def step_of_job(step: int, _: int, done: int = done) -> None:
                on_step(done + step, total)

            images.append(self._one(request.single(index), step_of_job))
        return images

    def _one(self, request: GenerationRequest, on_step: StepCallback) -> Image:
        torch = self._torch
        from PIL import Image

        prompt = request.prompt
        salt = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
        generator = torch.Generator().manual_seed(request.seed ^ salt)
        h, w = max(1, request.height // 8), max(1, request.width // 8)
        x = torch.randn(1, 4, h, w, generator=generator)
        for step in range(1, request.steps + 1):
            on_step(step, request.steps)
            if step == 1:
                self._trouble(request)
            if "[slow]" in prompt:
                time.sleep(self._step_s)
            x = x - 0.1 * torch.tanh(torch.nn.functional.conv2d(x, self._mix, padding=1)) * request.guidance
        rgb = torch.sigmoid(torch.nn.functional.conv2d(x, self._to_rgb))[0]
        pixels = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
        raw = ctypes.string_at(pixels.data_ptr(), pixels.numel())
        small = Image.frombytes("RGB", (w, h), raw)
        pattern = small.resize((request.width, request.height), Image.Resampling.NEAREST)
        source = request.input_image
        if not request.image_to_image or source is None:
            return pattern
        # Image-to-image: strength of the pattern over the input, as noise over a latent at that strength.
        start = Image.frombytes(source.mode, (source.width, source.height), source.pixels).convert("RGB")
        return Image.blend(start, pattern, request.denoising_strength)

    def _trouble(self, request: GenerationRequest) -> None:
        """Whatever the prompt asked to go wrong at step 1."""
        prompt = request.prompt
        if "[too-large]" in prompt:
            raise RequestTooLarge(f"{request.width}x{request.height} does not fit this GPU (as asked).")
        if "[boom]" in prompt:
            raise ValueError("boom: the tiny backend was told to fail")
        if "[crash]" in prompt:
            os.kill(os.getpid(), signal.SIGKILL)
        if "[hang]" in prompt:
            time.sleep(3600)
        if "[oom-wrapped]" in prompt and self._oom_pending != request:
            self._oom_pending = request
            raise RuntimeError("the pipeline failed") from OutOfMemoryError("out of memory (a library's own)")
        if "[oom2]" in prompt or ("[oom]" in prompt and self._oom_pending != request):
            self._oom_pending = request
            raise self._torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (tiny backend, as asked)"
            )
        self._oom_pending = None


class OutOfMemoryError(RuntimeError):
    """Stands for another library's out-of-memory error: the worker knows it by its name."""


def create_backend(settings: EngineSettings, report: LoadReporter) -> TinyBackend:
    report("loading tiny model", 0, 1)
    counter = os.environ.get("TINY_BACKEND_COUNTER")
    backend = TinyBackend(settings)
    _install_fake_cuda(Path(counter) if counter else None)
    report("loading tiny model", 1, 1)
    return backend


def create_backend_missing_model(settings: EngineSettings, report: LoadReporter) -> TinyBackend:
    missing = settings.model_dir / "majicflus_v134.safetensors"
    raise FileNotFoundError(f"Model file {missing} is missing.")
