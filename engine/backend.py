"""What the worker needs from an image backend, and how one is found from `engine.backend`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from engine.errors import EngineStartError
from engine.messages import GenerationRequest

if TYPE_CHECKING:
    from PIL.Image import Image

    from engine.settings import EngineSettings

StepCallback = Callable[[int, int], None]
"""on_step(step, total): called once per denoising step (1-based) of the whole job, so `total` is
`request.total_steps` (steps x count) when the images run one after another; raising from it stops the run."""

LoadReporter = Callable[[str, int, int], None]
"""report(stage, done, total): a backend's loading progress (bytes read, or steps of a stage)."""


@runtime_checkable
class Backend(Protocol):
    """Turns a request into its images. Runs inside the worker process only.

    `generate` returns `request.count` images, image i made with seed `request.image_seed(i)` and
    identical to what `generate(request.single(i))` makes; with `request.input_image` and a strength
    below 1 each starts from that image (image-to-image).
    """

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> Sequence[Image]: ...


BackendFactory = Callable[["EngineSettings", LoadReporter], Backend]
"""factory(settings, report) -> Backend. Optional extras the worker uses when a backend has them:
describe() -> (model files, memory strategy) and reduce_memory() -> bool (after an out-of-memory error)."""

DIFFSYNTH_FACTORY = "engine.diffsynth_backend:create_backend"
"""What `engine.backend = "diffsynth"` means; imported only inside the worker process."""


def factory_path(backend: str) -> tuple[str, str]:
    """(module, attribute) that `engine.backend` names; raises EngineStartError when malformed.

    Cheap and import-free, so the parent checks the setting before it spawns a worker.
    """
    path = DIFFSYNTH_FACTORY if backend == "diffsynth" else backend
    module, sep, attribute = path.partition(":")
    if not sep or not module or not attribute.isidentifier():
        raise EngineStartError(
            f'engine.backend is {backend!r}; set it to "diffsynth" or to an import path '
            '"package.module:factory" whose factory(settings, report) returns the backend.'
        )
    return module, attribute


def resolve_factory(backend: str) -> BackendFactory:
    """Import the factory that `engine.backend` names (in the worker process: it may import torch)."""
    module_name, attribute = factory_path(backend)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineStartError(
            f"engine.backend {backend!r}: module {module_name!r} could not be imported ({exc}). "
            "Check the setting; for the default backend install the GPU extra: pip install 'majicbot[gpu]'."
        ) from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise EngineStartError(
            f"engine.backend {backend!r}: module {module_name!r} has no callable {attribute!r}. "
            "Check the name after the colon."
        )
    return factory  # type: ignore[no-any-return]


def load_backend(settings: EngineSettings, report: LoadReporter) -> Backend:
    """Build the configured backend once (loads the models); raises whatever the factory raises."""
    return resolve_factory(settings.backend)(settings, report)


def preflight(settings: EngineSettings) -> None:
    """What the parent can check before it spawns a worker, without importing torch: the backend
    setting is well formed and, for the default backend, every model file is present and recognised.

    Fails fast with the fix (e.g. `majicbot download`) instead of after a worker start; blocking file
    reads, so call it off the event loop.
    """
    factory_path(settings.backend)
    if settings.backend != "diffsynth":
        return
    from models.check import ModelFilesMissing, require_complete

    try:
        require_complete(settings.model_dir)
    except ModelFilesMissing as missing:
        raise EngineStartError(str(missing)) from None
