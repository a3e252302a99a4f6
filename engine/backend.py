"""What the worker needs from an image backend, and how one is found from `engine.backend`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from engine.messages import GenerationRequest

if TYPE_CHECKING:
    from PIL.Image import Image

    from engine.settings import EngineSettings

StepCallback = Callable[[int, int], None]
"""on_step(step, total): called once per denoising step (1-based); raising from it stops the run."""


@runtime_checkable
class Backend(Protocol):
    """Turns a request into an image. Runs inside the worker process only."""

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> Image: ...


@runtime_checkable
class DescribedBackend(Backend, Protocol):
    """Optional extras a backend may offer; the worker uses them when present."""

    def describe(self) -> tuple[str, str]:
        """(model name(s) for metadata, memory strategy name)."""
        ...

    def reduce_memory(self) -> bool:
        """Switch to a lower-memory strategy after an out-of-memory error; False if none is left."""
        ...


BackendFactory = Callable[["EngineSettings"], Backend]
