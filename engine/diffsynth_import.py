"""Bringing DiffSynth in: the supported version, its modules imported in the background, quietly.

Importing DiffSynth took 8-12 s on the GPU machine, and most of that is not DiffSynth: its package
`__init__` imports every part of it (datasets, training, loaders), and with them transformers, pandas,
modelscope and torch's compiler stack; its attention module even compiles flex attention at import.
Laying out the DiT and T5 needs none of that: two model files that import only torch, einops and
transformers' T5. So the import runs in a background thread, in two parts:
- the model classes first, with DiffSynth's package `__init__`s held back (the packages exist, their
  `__init__` code has not run yet), ready a few seconds after the start, beside the card's measurement;
- then the held-back `__init__`s and the pipeline module, beside the reading of the weights.
While it runs, `torch.compile` compiles on first call, so flex attention (never called by majicbot)
costs nothing.

Imported only in the GPU worker process.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from engine.errors import EngineStartError

log = logging.getLogger(__name__)

T = TypeVar("T")

SUPPORTED_DIFFSYNTH = "2.1.12"  # the backend uses its internals (pipeline units, model classes)


def check_diffsynth_version() -> None:
    """The backend relies on DiffSynth's internals: refuse any other version, saying how to fix it."""
    try:
        installed = importlib.metadata.version("diffsynth")
    except importlib.metadata.PackageNotFoundError:
        raise EngineStartError(
            "diffsynth is not installed. Install the GPU extra: pip install 'majicbot[gpu]'."
        ) from None
    if installed != SUPPORTED_DIFFSYNTH:
        raise EngineStartError(
            f"diffsynth {installed} is installed; majicbot supports diffsynth {SUPPORTED_DIFFSYNTH} only. "
            f"Fix: pip install 'diffsynth=={SUPPORTED_DIFFSYNTH}'."
        )


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """DiffSynth prints banners and loading notes; keep them out of the worker's stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if line.strip():
            log.debug("diffsynth: %s", line)


def deferred_compile(real: Callable[..., Any]) -> Callable[..., Any]:
    """A `torch.compile` that compiles on first call (also in its decorator form)."""

    def compile(model: Any = None, **options: Any) -> Any:
        if model is None:
            return lambda fn: compile(fn, **options)
        compiled: Any = None

        @functools.wraps(model)
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal compiled
            if compiled is None:
                compiled = real(model, **options)
            return compiled(*args, **kwargs)

        return run

    return compile


@contextlib.contextmanager
def _compile_on_first_call() -> Iterator[None]:
    real = torch.compile
    torch.compile = deferred_compile(real)
    try:
        yield
    finally:
        torch.compile = real


@dataclass(frozen=True, slots=True)
class ModelClasses:
    """What laying out the DiT (and naming T5's tensors) needs from DiffSynth: no transformers."""

    skip_model_initialization: Callable[[], contextlib.AbstractContextManager[None]]
    flux_dit: Callable[[], Any]  # DiffSynth's FluxDiT (untyped)
    dit_converter: Callable[[dict[str, str]], dict[str, str]]
    t5_converter: Callable[[dict[str, str]], dict[str, str]]


@dataclass(frozen=True, slots=True)
class PipelineClasses:
    """What building the pipeline needs from DiffSynth."""

    model_config: type[Any]
    flux_image_pipeline: type[Any]
    prompt_embedder: type[Any]


# Outermost first. Their `__init__`s import all of DiffSynth; the model files need none of it.
_HELD_BACK = ("diffsynth", "diffsynth.core", "diffsynth.core.vram")


class _HeldBackPackages:
    """Packages registered (so their submodules import) whose `__init__` code runs only at `release`."""

    def __init__(self, names: Sequence[str]) -> None:
        self._held: list[tuple[Any, Any]] = []
        for name in names:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
            self._held.append((spec, module))

    def release(self) -> None:
        """Run the held-back `__init__`s, innermost first (an outer one imports the inner ones)."""
        while self._held:
            spec, module = self._held.pop()
            spec.loader.exec_module(module)


def _import_models() -> ModelClasses:
    from diffsynth.core.vram.initialization import skip_model_initialization
    from diffsynth.models.flux_dit import FluxDiT
    from diffsynth.utils.state_dict_converters.flux_dit import FluxDiTStateDictConverter
    from diffsynth.utils.state_dict_converters.flux_text_encoder_t5 import (
        FluxTextEncoderT5StateDictConverter,
    )

    return ModelClasses(
        skip_model_initialization,
        FluxDiT,
        FluxDiTStateDictConverter,
        FluxTextEncoderT5StateDictConverter,
    )


def _import_t5() -> Callable[[], Any]:
    from diffsynth.models.flux_text_encoder_t5 import FluxTextEncoderT5  # imports transformers

    return FluxTextEncoderT5  # type: ignore[no-any-return]


def _import_pipeline() -> PipelineClasses:
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.flux_image import FluxImagePipeline, FluxImageUnit_PromptEmbedder

    return PipelineClasses(ModelConfig, FluxImagePipeline, FluxImageUnit_PromptEmbedder)


class _Result(Generic[T]):
    """One value a thread hands over, or the exception it raised."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def set(self, value: T) -> None:
        self._value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def get(self) -> T:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class DiffSynthImport:
    """DiffSynth's modules imported in a background thread: the DiT's classes, then T5's class (and with
    it transformers), then the pipeline's. `models()`, `t5()` and `pipeline()` wait for their part and
    raise what the import raised."""

    def __init__(self) -> None:
        self._models: _Result[ModelClasses] = _Result()
        self._t5: _Result[Callable[[], Any]] = _Result()
        self._pipeline: _Result[PipelineClasses] = _Result()
        self._held: _HeldBackPackages | None = None
        self._thread = threading.Thread(target=self._run, name="diffsynth-import", daemon=True)

    def start(self) -> DiffSynthImport:
        check_diffsynth_version()
        self._thread.start()
        return self

    def models(self) -> ModelClasses:
        return self._models.get()

    def t5(self) -> Callable[[], Any]:
        return self._t5.get()

    def pipeline(self) -> PipelineClasses:
        return self._pipeline.get()

    def _run(self) -> None:
        started = time.perf_counter()
        parts: list[tuple[_Result[Any], Callable[[], Any]]] = [
            (self._models, self._import_models),
            (self._t5, _import_t5),
            (self._pipeline, self._import_pipeline),
        ]
        # torch.compile stays replaced while this thread imports; the loading thread meanwhile
        # measures the card, reads headers and weights, which compile nothing.
        with quiet_stdout(), _compile_on_first_call():
            for position, (result, load) in enumerate(parts):
                try:
                    result.set(load())
                except BaseException as exc:  # handed to the threads that wait for this part or later
                    for later, _ in parts[position:]:
                        later.fail(exc)
                    return
                log.info(
                    "DiffSynth import: part %d of 3 after %.1f s", position + 1, time.perf_counter() - started
                )

    def _import_models(self) -> ModelClasses:
        if "diffsynth" not in sys.modules:
            self._held = _HeldBackPackages(_HELD_BACK)
        return _import_models()

    def _import_pipeline(self) -> PipelineClasses:
        if self._held is not None:
            self._held.release()
        return _import_pipeline()
