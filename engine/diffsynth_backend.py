"""majicflus_v1 through DiffSynth-Studio's FluxImagePipeline, with our own float8 memory engine.

The DiT is stored in float8_e4m3fn and computed in bf16 (or with fp8 matmuls where the GPU has them,
see `engine.fp8_linear`). What stays on the GPU follows the VRAM budget (`engine.vram_plan`): with room,
everything is resident; otherwise the DiT blocks that fit stay resident between jobs and the rest stream
from pinned host memory on a side CUDA stream, prefetched while earlier blocks compute
(`engine.layer_streaming`). T5 streams the same way when it does not fit, and its slots are freed before
the DiT runs. Prompt embeddings are cached (LRU) so a reroll skips the text encoders.

Imported only in the GPU worker process: it imports torch and diffsynth.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from engine.backend import StepCallback
from engine.fp8_linear import FP8, choose_matmul, convert_linears
from engine.layer_streaming import StreamedBlocks, move_outside_blocks
from engine.messages import GenerationRequest
from engine.prompt_cache import PromptCache
from engine.settings import EngineSettings
from engine.vram_plan import GIB, BudgetTooSmall, EnginePlan, plan_engine
from models.check import require_complete
from models.registry import ModelPaths, model_paths

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

COMPUTE_DTYPE = torch.bfloat16
T5_SEQUENCE_LENGTH = 512
# Activations and temporaries of the DiT at about one megapixel, and of the VAE decoder (measured on
# an H100: see docs/performance.md). Larger images may need more; an out-of-memory error then
# makes reduce_memory() stream more blocks.
WORKSPACE_BYTES = int(2.5 * GIB)
# Slack for the caching allocator's rounding and fragmentation under a hard per-process cap.
ALLOCATOR_SLACK_BYTES = int(0.4 * GIB)
# A negative prompt only acts through true classifier-free guidance (two DiT passes per step).
NEGATIVE_PROMPT_CFG_SCALE = 2.0
REDUCE_FACTOR = 0.75
# Whether choose_matmul also tries the torch.compile'd float8 quantisation (see engine.fp8_linear):
# off until an end-to-end run shows it faster; the benchmark's compiled-N configurations turn it on.
COMPILED_QUANTISATION = False

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PromptEmbedding:
    """The outputs of DiffSynth's prompt unit, kept in host memory by the cache."""

    prompt_emb: torch.Tensor
    pooled_prompt_emb: torch.Tensor
    text_ids: torch.Tensor

    def to(self, device: torch.device) -> PromptEmbedding:
        return PromptEmbedding(
            self.prompt_emb.to(device, non_blocking=True),
            self.pooled_prompt_emb.to(device, non_blocking=True),
            self.text_ids.to(device, non_blocking=True),
        )


def _module_bytes(module: torch.nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """DiffSynth prints banners and loading notes; keep them out of the worker's stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if line.strip():
            log.debug("diffsynth: %s", line)


class DiffSynthBackend:
    """The default backend: `generate(request, on_step) -> PIL.Image` on one GPU."""

    def __init__(self, settings: EngineSettings) -> None:
        # Missing files fail here, before CUDA is touched, with the command that fixes them.
        require_complete(settings.model_dir)
        self._paths: ModelPaths = model_paths(settings.model_dir)
        self._device = torch.device(settings.device)
        if self._device.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError(
                f"The diffsynth backend needs a CUDA GPU, and engine.device is {settings.device!r} "
                f"(CUDA available: {torch.cuda.is_available()}). Set engine.device to a CUDA device."
            )
        torch.cuda.set_device(self._device)
        total = torch.cuda.get_device_properties(self._device).total_memory
        budget = (
            total if settings.vram_budget_gib is None else min(total, int(settings.vram_budget_gib * GIB))
        )
        if budget < total:
            # Enforce the budget: exceeding it raises out-of-memory instead of starving a shared card.
            torch.cuda.set_per_process_memory_fraction(budget / total, self._device)
        self._budget = budget
        choice = choose_matmul(self._device, compiled=COMPILED_QUANTISATION)
        self._matmul = choice.mode
        self.matmul_choice = choice
        log.info("matmul: %s", choice.summary())
        self._cache: PromptCache[tuple[str, int], PromptEmbedding] = PromptCache(settings.prompt_cache_size)
        self._pipe = self._load()
        self._plan = self._make_plan(budget)
        self._apply(self._plan)
        self._install_prompt_cache()
        # The worker collects garbage after every job, between two queued jobs; a full collection
        # over the loaded libraries and model takes a good part of a second. What exists now lives
        # as long as the process, so later collections need not look at it.
        gc.collect()
        gc.freeze()
        log.info(
            "strategy: %s (%d objects frozen out of garbage collection)",
            self.describe()[1],
            gc.get_freeze_count(),
        )

    # -- loading -------------------------------------------------------------------------------
    def _load(self) -> Any:
        os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")  # never the network, whatever happens
        with _quiet_stdout():
            from diffsynth.core import ModelConfig
            from diffsynth.pipelines.flux_image import FluxImagePipeline

            device = str(self._device)
            paths = self._paths
            pipe = FluxImagePipeline.from_pretrained(
                torch_dtype=COMPUTE_DTYPE,
                device=device,
                model_configs=[
                    # Loaded to host memory; the plan decides what goes to the GPU.
                    ModelConfig(path=str(paths.dit), computation_dtype=FP8, computation_device="cpu"),
                    ModelConfig(path=[str(p) for p in paths.text_encoder_t5], computation_device="cpu"),
                    ModelConfig(path=str(paths.text_encoder_clip), computation_device=device),
                    ModelConfig(path=str(paths.vae), computation_device=device),
                ],
                tokenizer_1_config=ModelConfig(path=str(paths.tokenizer_clip)),
                tokenizer_2_config=ModelConfig(path=str(paths.tokenizer_t5)),
            )
        replaced = convert_linears(pipe.dit, COMPUTE_DTYPE, self._matmul)
        log.info("DiT: %d linear layers stored in float8", replaced)
        dit_blocks = list(pipe.dit.blocks) + list(pipe.dit.single_blocks)
        t5_blocks = list(pipe.text_encoder_2.encoder.block)
        self._fixed_bytes = (
            move_outside_blocks(pipe.dit, dit_blocks, self._device)
            + move_outside_blocks(pipe.text_encoder_2, t5_blocks, self._device)
            + _module_bytes(pipe.text_encoder_1)
            + _module_bytes(pipe.vae_decoder)
            + _module_bytes(pipe.vae_encoder)
        )
        self._dit = StreamedBlocks(dit_blocks, self._device, "dit", wrap=True)
        self._t5 = StreamedBlocks(t5_blocks, self._device, "t5", wrap=False)
        return pipe

    def _make_plan(self, budget: int) -> EnginePlan:
        return plan_engine(
            budget_bytes=budget - ALLOCATOR_SLACK_BYTES,
            workspace_bytes=WORKSPACE_BYTES,
            fixed_bytes=self._fixed_bytes,
            dit_blocks=self._dit.block_bytes,
            t5_blocks=self._t5.block_bytes,
        )

    def _apply(self, plan: EnginePlan) -> None:
        started = time.perf_counter()
        # Streamed first so that memory is freed before new resident blocks are uploaded.
        self._dit.apply(plan.dit)
        self._t5.apply(plan.t5)
        if plan.t5_slots_released:
            self._t5.release_slots()
        torch.cuda.synchronize(self._device)
        log.info(
            "memory plan applied in %.1f s: %s; DiT streams %.2f GiB per step; accounted peak %.2f GiB",
            time.perf_counter() - started,
            plan.strategy,
            plan.dit.streamed_bytes / GIB,
            plan.peak_bytes / GIB,
        )

    def _install_prompt_cache(self) -> None:
        from diffsynth.pipelines.flux_image import FluxImageUnit_PromptEmbedder

        backend = self

        class CachedPromptEmbedder(FluxImageUnit_PromptEmbedder):  # type: ignore[misc]
            def process(
                self, pipe: Any, prompt: str, t5_sequence_length: int, positive: bool
            ) -> dict[str, Any]:
                def encode() -> dict[str, Any]:
                    out: dict[str, Any] = super(CachedPromptEmbedder, self).process(
                        pipe, prompt, t5_sequence_length, positive
                    )
                    return out

                emb = backend._embedding(prompt, t5_sequence_length, encode)
                return {
                    "prompt_emb": emb.prompt_emb,
                    "pooled_prompt_emb": emb.pooled_prompt_emb,
                    "text_ids": emb.text_ids,
                }

        units = self._pipe.units
        for i, unit in enumerate(units):
            if type(unit) is FluxImageUnit_PromptEmbedder:
                units[i] = CachedPromptEmbedder()
                return
        raise RuntimeError("DiffSynth's FluxImagePipeline has no prompt unit to wrap; pin diffsynth==2.1.12.")

    def _embedding(self, prompt: str, length: int, encode: Callable[[], dict[str, Any]]) -> PromptEmbedding:
        key = (prompt, length)
        cached = self._cache.get(key)
        if cached is not None:
            return cached.to(self._device)
        self._t5.allocate_slots()
        try:
            out = encode()
        finally:
            if self._plan.t5_slots_released:
                self._t5.release_slots()
        emb = PromptEmbedding(out["prompt_emb"], out["pooled_prompt_emb"], out["text_ids"])
        self._cache.put(
            key,
            PromptEmbedding(*(t.to("cpu") for t in (emb.prompt_emb, emb.pooled_prompt_emb, emb.text_ids))),
        )
        return emb

    # -- the Backend protocol ------------------------------------------------------------------
    def generate(self, request: GenerationRequest, on_step: StepCallback) -> Image:
        """One image; on_step(step, total) after each denoising step (it may raise to cancel)."""
        cfg_scale = NEGATIVE_PROMPT_CFG_SCALE if request.negative_prompt.strip() else 1.0
        try:
            image: Image = self._pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                cfg_scale=cfg_scale,
                embedded_guidance=request.guidance,
                t5_sequence_length=T5_SEQUENCE_LENGTH,
                height=request.height,
                width=request.width,
                seed=request.seed,
                rand_device="cpu",  # same seed, same noise on any GPU
                num_inference_steps=request.steps,
                progress_bar_cmd=_progress(on_step, self._device),
            )
        except BaseException:
            # Cancelled between steps, out of memory mid-block, ...: leave the streams consistent.
            self._dit.recover()
            self._t5.recover()
            raise
        return image

    def describe(self) -> tuple[str, str]:
        """(model files, memory strategy) for logs and PNG metadata."""
        return self._paths.file_names, f"{self._plan.strategy}, {self._matmul}"

    def reduce_memory(self) -> bool:
        """After an out-of-memory error: plan for three quarters of the budget. False if nothing changes."""
        try:
            plan = self._make_plan(int(self._plan.budget_bytes * REDUCE_FACTOR) + ALLOCATOR_SLACK_BYTES)
        except BudgetTooSmall:
            return False
        if plan.dit.resident == self._plan.dit.resident and plan.t5.resident == self._plan.t5.resident:
            return False
        self._dit.recover()
        self._t5.recover()
        self._apply(plan)
        self._plan = plan
        log.warning("reduced GPU memory use after out-of-memory: %s", plan.strategy)
        return True

    # -- for the benchmark ---------------------------------------------------------------------
    @property
    def plan(self) -> EnginePlan:
        return self._plan

    @property
    def streamed_bytes_total(self) -> int:
        return self._dit.copied_bytes + self._t5.copied_bytes


def _progress(on_step: StepCallback, device: torch.device) -> Callable[[Iterable[T]], Iterator[T]]:
    """DiffSynth's `progress_bar_cmd`: a generator over the timesteps that reports each finished step.

    Waits for the GPU after each step so that progress is real and a cancel acts within one step.
    """

    def wrap(timesteps: Iterable[T]) -> Iterator[T]:
        items = list(timesteps)
        total = len(items)
        for step, item in enumerate(items, start=1):
            yield item
            torch.cuda.current_stream(device).synchronize()
            on_step(step, total)

    return wrap


def create_backend(settings: EngineSettings) -> DiffSynthBackend:
    """The factory named by `engine.backend = "diffsynth"`."""
    return DiffSynthBackend(settings)
