"""majicflus_v1 through DiffSynth-Studio's FluxImagePipeline, with our own float8 memory engine.

The DiT is stored in float8_e4m3fn and computed in bf16 (or with fp8 matmuls when `engine.matmul` asks,
see `engine.fp8_linear`). The engine measures the card as it finds it (`engine.gpu_budget`), plans which
DiT blocks stay resident for the largest image it must make (`engine.vram_plan`, `engine.memory_model`),
and streams the rest from page-locked host memory on a side CUDA stream, prefetched while earlier blocks
compute (`engine.layer_streaming`). T5 is kept in host memory (its linear weights in float8 by default)
and streams through the room the image phase leaves while a new prompt is encoded. Weights are read
from the checkpoints straight to where the plan puts them (`engine.weight_files`): no second copy.

Per request: the size is checked against the room (refused before its first step when it cannot fit),
and the VAE decodes whole when that fits, else in tiles (`engine.vae_tiling`). Prompt embeddings are
cached (LRU) so a reroll skips the text encoders.

Image-to-image goes through the pipeline's own `input_image` and `denoising_strength`: the input (already
the request's size) is encoded by the VAE, whole or in tiles as the plan says, and noised to the
strength with the seed's CPU noise; the scheduler then runs the request's steps from that sigma down.
Several images of one request run one after another with seeds seed, seed + 1, ...: the prompt
embeddings come from the cache after the first, the input is encoded once, the resident blocks stay
where they are. (Streamed blocks are still streamed once per step per image: one streamed pass for
several latents is not done yet.)

Imported only in the GPU worker process: it imports torch and diffsynth.
"""

from __future__ import annotations

import os

# Set before torch's allocator starts: grown segments instead of fixed blocks, so that what is reserved
# stays close to what is allocated and a plan's last few hundred MiB are not lost to fragmentation.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import contextlib
import ctypes
import gc
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from engine.backend import LoadReporter, StepCallback
from engine.diffsynth_import import SUPPORTED_DIFFSYNTH, DiffSynthImport, quiet_stdout
from engine.errors import EngineStartError, RequestTooLarge
from engine.fp8_linear import FP8, Fp8Linear, convert_linears, matmul_mode, scaled_fp8
from engine.gpu_budget import LATE_KERNEL_BYTES, CardMemory, measure_card, outside_allocator_bytes
from engine.host_memory import HostNeed, read_meminfo, shortfall
from engine.layer_streaming import (
    BlockSizes,
    PlacedTensor,
    StreamedBlocks,
    block_layout_bytes,
    page_locked,
    place_outside_blocks,
    release_page_locked,
    storage_view,
)
from engine.lean_blocks import ChunkSetting, install
from engine.memory_model import (
    GIB,
    MIB,
    T5_ACTIVATION_BYTES,
    DecodePlan,
    fit_request,
    largest_square_side,
    planned_room_bytes,
)
from engine.messages import GenerationRequest, RawImage
from engine.prompt_cache import PromptCache
from engine.settings import EngineSettings
from engine.vae_tiling import decode_tiled, encode_tiled
from engine.vram_plan import BudgetTooSmall, EnginePlan, PlanHolder, StreamPlan, plan_engine
from engine.weight_files import CheckpointReader, StoredTensor, index_checkpoint, model_to_file_names
from models.check import require_complete
from models.registry import ModelPaths, model_paths

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

COMPUTE_DTYPE = torch.bfloat16
T5_SEQUENCE_LENGTH = 512
# A negative prompt only acts through true classifier-free guidance (two DiT passes per step).
NEGATIVE_PROMPT_CFG_SCALE = 2.0
REDUCE_FACTOR = 0.75
WARM_UP_SIDE = 256  # the image made at load, so that every kernel is loaded before the first job

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


def _dit_dtypes(module: torch.nn.Module, name: str, tensor: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    if isinstance(module, Fp8Linear) and name == "weight":
        return FP8, FP8  # Fp8Linear converts (or quantises) per call
    return (COMPUTE_DTYPE, COMPUTE_DTYPE) if tensor.is_floating_point() else (tensor.dtype, tensor.dtype)


def _t5_dtypes(
    storage: torch.dtype,
) -> Callable[[torch.nn.Module, str, torch.Tensor], tuple[torch.dtype, torch.dtype]]:
    def rule(module: torch.nn.Module, name: str, tensor: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
        if isinstance(module, torch.nn.Linear) and name == "weight":
            return storage, COMPUTE_DTYPE
        return (COMPUTE_DTYPE, COMPUTE_DTYPE) if tensor.is_floating_point() else (tensor.dtype, tensor.dtype)

    return rule


def t5_sizes_from_checkpoint(
    index: dict[str, StoredTensor], names: dict[str, str], storage: torch.dtype
) -> BlockSizes:
    """T5's block sizes from its checkpoint's headers, as `_t5_dtypes` will lay out the model: the
    linear layers' weights (2-D, other than the relative position bias) in `storage`, the rest in
    bf16. Every model tensor counts, also two filled from one stored tensor (transformers 5 does not
    tie T5's `shared` and `encoder.embed_tokens`); where they are tied, the layout check plans again."""
    blocks: dict[int, list[tuple[int, torch.dtype, torch.dtype]]] = {}
    outside: dict[str, int] = {}
    for model_name, file_name in names.items():
        stored = index.get(file_name)
        if stored is None:
            continue  # reading names the missing tensor
        numel = math.prod(stored.shape)
        parts = model_name.split(".")
        if parts[:2] == ["encoder", "block"] and len(parts) > 2 and parts[2].isdigit():
            linear = (
                len(stored.shape) == 2 and parts[-1] == "weight" and parts[-2] != "relative_attention_bias"
            )
            blocks.setdefault(int(parts[2]), []).append(
                (numel, storage if linear else COMPUTE_DTYPE, COMPUTE_DTYPE)
            )
        else:
            outside[model_name] = numel * COMPUTE_DTYPE.itemsize
    sizes = [block_layout_bytes(blocks[i]) for i in sorted(blocks)]
    return BlockSizes(
        tuple(size for size, _ in sizes), max((c for _, c in sizes), default=0), sum(outside.values())
    )


class _Progress:
    """Loading progress in bytes, reported at most every 2 % (each report crosses a pipe)."""

    def __init__(self, report: LoadReporter, total: int) -> None:
        self._report = report
        self._total = max(total, 1)
        self._done = 0
        self._sent = -1.0

    def add(self, nbytes: int) -> None:
        self._done += nbytes
        fraction = self._done / self._total
        if fraction - self._sent >= 0.02 or self._done >= self._total:
            self._sent = fraction
            self._report("reading weights", min(self._done, self._total), self._total)


class _PlannedDecoder(torch.nn.Module):
    """Stands in for the pipeline's VAE decoder: decodes whole or in tiles, as the request's plan says."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.plan = DecodePlan(tile=None)

    def forward(self, latents: torch.Tensor, **_: Any) -> torch.Tensor:
        return decode_tiled(self.decoder, latents, self.plan)


class _PlannedEncoder(torch.nn.Module):
    """Stands in for the pipeline's VAE encoder: encodes whole or in tiles, as the request's plan says.

    The images of one request all start from the same input, so its latents are kept until `forget()`
    (called before and after each request) and encoded once."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.plan = DecodePlan(tile=None)
        self._kept: torch.Tensor | None = None

    def forward(self, sample: torch.Tensor, **_: Any) -> torch.Tensor:
        if self._kept is None:
            self._kept = encode_tiled(self.encoder, sample, self.plan)
        return self._kept

    def forget(self) -> None:
        self._kept = None


class DiffSynthBackend:
    """The default backend: `generate(request, on_step) -> list of PIL images` on one GPU."""

    def __init__(self, settings: EngineSettings, report: LoadReporter) -> None:
        # Missing files fail here, before CUDA is touched, with the command that fixes them.
        require_complete(settings.model_dir)
        self._paths: ModelPaths = model_paths(settings.model_dir)
        self._settings = settings
        self._device = torch.device(settings.device)
        if self._device.type != "cuda" or not torch.cuda.is_available():
            raise EngineStartError(
                f"The diffsynth backend needs a CUDA GPU, and engine.device is {settings.device!r} "
                f"(CUDA available: {torch.cuda.is_available()}). Set engine.device to a CUDA device."
            )
        self._matmul = matmul_mode(settings.matmul, self._device)
        started = time.perf_counter()
        self._imports = DiffSynthImport().start()  # beside the card's measurement and the reading
        self._card: CardMemory = measure_card(self._device, fp8=self._matmul.fp8)
        log.info("card measured in %.1f s", time.perf_counter() - started)
        self._operator_budget = (
            None if settings.vram_budget_gib is None else int(settings.vram_budget_gib * GIB)
        )
        log.info("GPU: %s", self._card.describe(self._operator_budget))
        self._cache: PromptCache[tuple[str, int], PromptEmbedding] = PromptCache(settings.prompt_cache_size)
        self._build_models()
        log.info("DiT laid out %.1f s after the start", time.perf_counter() - started)
        self._plans = PlanHolder(self._plan_for(self._card.allocator_budget(self._operator_budget)))
        self._check_host_memory()
        if self._operator_budget is not None:
            # Enforce the budget: exceeding it raises out-of-memory instead of starving a shared card.
            cap = self._plans.base.budget_bytes + self._card.kernels
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap / self._card.total), self._device)
        self._pipe = self._load(report)
        self._install_prompt_cache()
        report("warming up", 0, 1)
        self._warm_up()
        report("warming up", 1, 1)
        # The worker collects garbage after every job, between two queued jobs; a full collection
        # over the loaded libraries and model takes a good part of a second. What exists now lives
        # as long as the process, so later collections need not look at it.
        gc.collect()
        gc.freeze()
        _trim_heap()
        log.info(
            "ready in %.1f s: %s; image sizes up to %d px (%dx%d square)",
            time.perf_counter() - started,
            self.describe()[1],
            self._settings.max_pixels,
            self.largest_square,
            self.largest_square,
        )

    # -- loading -------------------------------------------------------------------------------
    def _build_models(self) -> None:
        """The DiT as an empty shell (no memory), both checkpoints indexed, the DiT's blocks laid out,
        and T5's layout worked out from its checkpoint's headers: T5's class comes with transformers,
        whose import is left to run beside the reading of the DiT."""
        waited = time.perf_counter()
        classes = self._imports.models()
        log.info("waited %.1f s for DiffSynth's DiT classes", time.perf_counter() - waited)
        self._skip_initialization = classes.skip_model_initialization
        with quiet_stdout(), classes.skip_model_initialization():
            dit = classes.flux_dit()
        convert_linears(dit, COMPUTE_DTYPE, self._matmul)
        self._chunks = ChunkSetting()
        install(dit, self._chunks)
        self._dit = dit.eval()
        self._dit_index = index_checkpoint([self._paths.dit])
        self._t5_index = index_checkpoint(self._paths.text_encoder_t5)
        self._dit_names = model_to_file_names(self._dit_index, classes.dit_converter)
        self._t5_names = model_to_file_names(self._t5_index, classes.t5_converter)
        self._t5_storage = FP8 if self._settings.text_encoder_storage == "fp8" else COMPUTE_DTYPE
        self._dit_blocks = StreamedBlocks(
            list(dit.blocks) + list(dit.single_blocks), self._device, "dit", _dit_dtypes, wrap=True
        )
        self._t5_sizes = t5_sizes_from_checkpoint(self._t5_index, self._t5_names, self._t5_storage)
        # CLIP and the VAE are held in bf16: no more than their files' sizes.
        self._fixed_bytes_but_t5 = _outside_bytes(dit, self._dit_blocks) + sum(
            p.stat().st_size for p in (self._paths.text_encoder_clip, self._paths.vae)
        )

    def _build_t5(self) -> None:
        """T5 as an empty shell, its blocks laid out; if the layout differs from the one planned with
        (from the headers), the plan is made again before any of T5 is read."""
        waited = time.perf_counter()
        flux_t5 = self._imports.t5()
        log.info("waited %.1f s for T5's class (transformers)", time.perf_counter() - waited)
        with quiet_stdout(), self._skip_initialization():
            t5 = flux_t5()
        self._t5 = t5.eval()
        self._t5_blocks = StreamedBlocks(
            list(t5.encoder.block), self._device, "t5", _t5_dtypes(self._t5_storage), wrap=False
        )
        laid_out = BlockSizes(
            self._t5_blocks.block_bytes, self._t5_blocks.compute_bytes, _outside_bytes(t5, self._t5_blocks)
        )
        if laid_out != self._t5_sizes:
            log.warning("T5 is laid out unlike its checkpoint's headers said; planning again")
            self._t5_sizes = laid_out
            plan = self._plan_for(self._card.allocator_budget(self._operator_budget))
            self._plans.rebase(plan)
            self._apply(plan)

    def _plan_for(self, allocator_budget: int) -> EnginePlan:
        """The plan that keeps room for the largest image (engine.max_pixels)."""
        try:
            return plan_engine(
                budget_bytes=allocator_budget,
                workspace_bytes=planned_room_bytes(self._settings.max_pixels),
                fixed_bytes=self._fixed_bytes_but_t5 + self._t5_sizes.outside_bytes,
                dit_blocks=self._dit_blocks.block_bytes,
                t5_blocks=self._t5_sizes.block_bytes,
                t5_extra_bytes=self._t5_sizes.compute_bytes + T5_ACTIVATION_BYTES,
            )
        except BudgetTooSmall as exc:
            raise EngineStartError(
                "This GPU has too little free memory for majicflus: "
                f"{self._card.describe(self._operator_budget)}; {exc} Close other programs that use the GPU, "
                "lower engine.max_pixels, or raise "
                "engine.vram_budget_gib."
            ) from None

    def _check_host_memory(self) -> None:
        need = HostNeed(self._plans.base.dit.streamed_bytes + sum(self._t5_sizes.block_bytes))
        machine = read_meminfo()
        log.info("host memory: the plan needs %s", need.describe())
        if machine is None:
            return
        problem = shortfall(need, machine)
        if problem is None:
            return
        if need.total > machine.total + machine.swap_free:
            raise EngineStartError(problem)
        log.warning("%s Loading anyway: the system may swap.", problem)

    def _load(self, report: LoadReporter) -> Any:
        os.environ.setdefault("DIFFSYNTH_SKIP_DOWNLOAD", "True")  # never the network, whatever happens
        paths = self._paths
        small = sum(p.stat().st_size for p in (paths.text_encoder_clip, paths.vae))
        big = sum(t.nbytes for t in self._dit_index.values()) + sum(t.nbytes for t in self._t5_index.values())
        progress = _Progress(report, small + big)
        started = time.perf_counter()
        # The DiT while transformers is imported for T5, then T5 while DiffSynth's pipeline is.
        with CheckpointReader(self._device, progress.add, page_locked, release_page_locked) as reader:
            self._fill(reader, self._dit, self._dit_blocks, self._plan.dit, self._dit_index, self._dit_names)
            self._build_t5()
            self._fill(reader, self._t5, self._t5_blocks, self._plan.t5, self._t5_index, self._t5_names)
        self._t5_blocks.release_slots()
        log.info(
            "read %.1f GB of weights in %.1f s (%s)",
            reader.bytes_read / 1e9,
            time.perf_counter() - started,
            reader.timing.describe(time.perf_counter() - started),
        )
        loading = time.perf_counter()
        classes = self._imports.pipeline()
        with quiet_stdout():
            device = str(self._device)
            # CLIP and the VAE are small: DiffSynth's own loader puts them on the GPU.
            pipe = classes.flux_image_pipeline.from_pretrained(
                torch_dtype=COMPUTE_DTYPE,
                device=device,
                model_configs=[
                    classes.model_config(path=str(paths.text_encoder_clip), computation_device=device),
                    classes.model_config(path=str(paths.vae), computation_device=device),
                ],
                tokenizer_1_config=classes.model_config(path=str(paths.tokenizer_clip)),
                tokenizer_2_config=classes.model_config(path=str(paths.tokenizer_t5)),
            )
        progress.add(small)
        log.info("CLIP and VAE loaded by DiffSynth in %.1f s", time.perf_counter() - loading)
        pipe.dit = self._dit
        pipe.text_encoder_2 = self._t5
        self._decoder = _PlannedDecoder(pipe.vae_decoder)
        pipe.vae_decoder = self._decoder
        self._encoder = _PlannedEncoder(pipe.vae_encoder)
        pipe.vae_encoder = self._encoder
        torch.cuda.synchronize(self._device)
        log.info(
            "weights placed: DiT %.2f GiB on the GPU, %.2f GiB in host memory; T5 %.2f GiB in host memory",
            self._dit_blocks.resident_bytes / GIB,
            self._dit_blocks.host_bytes / GIB,
            self._t5_blocks.host_bytes / GIB,
        )
        return pipe

    def _fill(
        self,
        reader: CheckpointReader,
        model: torch.nn.Module,
        blocks: StreamedBlocks,
        plan: StreamPlan,
        index: dict[str, StoredTensor],
        names: dict[str, str],
    ) -> None:
        """Read a model's tensors from its checkpoint straight into place: the parts outside the blocks
        onto the GPU, each block where `plan` puts it."""

        def source(name: str) -> StoredTensor | None:
            file_name = names.get(name)
            return None if file_name is None else index.get(file_name)

        def missing(name: str) -> EngineStartError:
            return EngineStartError(
                f"The checkpoint has no tensor for {name!r}: it is not the expected model file. "
                "Run `majicbot models check`."
            )

        def fill_outside(name: str, original: torch.Tensor, target: torch.Tensor) -> None:
            stored = source(name)
            if stored is not None:
                reader.read_block([(stored, target)])
            elif not original.is_meta:
                target.copy_(original)  # a buffer the model computes itself (not in checkpoints)
            else:
                raise missing(name)

        qualified = {id(m): n for n, m in model.named_modules()}
        place_outside_blocks(model, blocks.modules, self._device, blocks.dtype_of, fill_outside)

        def fill(block: int, placed: Sequence[PlacedTensor], buffer: torch.Tensor) -> None:
            pairs = []
            for p in placed:
                name = f"{qualified[id(p.module)]}.{p.name}"
                stored = source(name)
                if stored is None:
                    raise missing(name)
                pairs.append((stored, storage_view(buffer, p)))

            def convert(position: int, tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                if not (placed[position].converted and target.dtype == FP8):
                    return tensor.to(target.dtype)
                quantised, scale = scaled_fp8(tensor)  # T5's weights: float8 with a scale
                blocks.set_scale(block, position, scale)
                return quantised

            reader.read_block(pairs, convert)

        blocks.load(plan, fill)

    def _install_prompt_cache(self) -> None:
        prompt_embedder: Any = self._imports.pipeline().prompt_embedder

        backend = self

        class CachedPromptEmbedder(prompt_embedder):  # type: ignore[misc]
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
            if type(unit) is prompt_embedder:
                units[i] = CachedPromptEmbedder()
                return
        raise EngineStartError(
            "DiffSynth's FluxImagePipeline has no prompt unit to wrap; "
            f"install diffsynth=={SUPPORTED_DIFFSYNTH}."
        )

    def _embedding(self, prompt: str, length: int, encode: Callable[[], dict[str, Any]]) -> PromptEmbedding:
        key = (prompt, length)
        cached = self._cache.get(key)
        if cached is not None:
            return cached.to(self._device)
        self._t5_blocks.allocate_slots()
        try:
            out = encode()
        finally:
            # T5's slots live in the room the DiT's activations use next.
            self._t5_blocks.release_slots()
        emb = PromptEmbedding(out["prompt_emb"], out["pooled_prompt_emb"], out["text_ids"])
        self._cache.put(
            key,
            PromptEmbedding(*(t.to("cpu") for t in (emb.prompt_emb, emb.pooled_prompt_emb, emb.text_ids))),
        )
        return emb

    def _warm_up(self) -> None:
        """One tiny image made from an image, so that the kernels of every phase (the VAE encoder's too)
        are loaded before the first job; then the memory they took outside the allocator is measured,
        and the plan shrinks if it was short."""
        started = time.perf_counter()
        side = WARM_UP_SIDE
        grey = RawImage("RGB", side, side, bytes([128]) * (side * side * 3))
        request = GenerationRequest("", "", 0, 1, side, side, 3.5, strength=0.5, input_image=grey)
        self.generate(request, lambda step, total: None)
        torch.cuda.synchronize(self._device)
        outside = outside_allocator_bytes(self._device, self._card.free_after_context)
        torch.cuda.empty_cache()
        planned = self._card.kernels
        log.info(
            "warm-up image in %.1f s; outside torch's allocator: %.0f MiB (measured before load: %.0f MiB)",
            time.perf_counter() - started,
            outside / MIB,
            planned / MIB,
        )
        if outside > planned + LATE_KERNEL_BYTES:
            card = CardMemory(self._card.total, self._card.free_after_context, self._card.context, outside)
            plan = self._plan_for(card.allocator_budget(self._operator_budget))
            log.warning("kernels took more memory than planned; re-planning: %s", plan.strategy)
            self._card = card
            self._apply(plan)
            self._plans.rebase(plan)

    # -- the Backend protocol ------------------------------------------------------------------
    def generate(self, request: GenerationRequest, on_step: StepCallback) -> list[Image]:
        """The request's images, one after another (seed, seed + 1, ...); on_step(step, total) after
        each denoising step of the job (it may raise to cancel)."""
        fit = fit_request(
            request.width, request.height, self._plan.workspace_bytes, encodes=request.image_to_image
        )
        if not fit.fits or request.width * request.height > self._settings.max_pixels:
            side = self.largest_square
            raise RequestTooLarge(
                f"{request.width}x{request.height} needs {fit.needed_bytes / GIB:.1f} GiB of GPU memory to "
                f"work in and this GPU keeps {fit.room_bytes / GIB:.1f} GiB (engine.max_pixels "
                f"{self._settings.max_pixels}); the largest square it makes is {side}x{side}. "
                "Ask for a smaller size."
            )
        restored = self._plans.next_run()
        if restored is not None:  # a smaller plan lasts one job
            self._apply(restored)
            log.info("back to the planned memory use: %s", restored.strategy)
        assert fit.decode is not None
        self._decoder.plan = fit.decode
        self._encoder.plan = fit.encode or DecodePlan(tile=None)
        self._chunks.tokens = fit.dit_chunk
        tiled_encode = fit.encode is not None and fit.encode.tiled
        if fit.decode.tiled or fit.dit_chunk is not None or tiled_encode:
            log.info(
                "%dx%d: DiT in chunks of %s tokens, VAE decode %s, encode %s",
                request.width,
                request.height,
                fit.dit_chunk or "all",
                fit.decode.describe(),
                "none" if fit.encode is None else fit.encode.describe(),
            )
        cfg_scale = NEGATIVE_PROMPT_CFG_SCALE if request.negative_prompt.strip() else 1.0
        source = _pil(request.input_image) if request.image_to_image and request.input_image else None
        images: list[Image] = []
        self._encoder.forget()
        try:
            for index in range(request.count):
                image: Image = self._pipe(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    cfg_scale=cfg_scale,
                    embedded_guidance=request.guidance,
                    t5_sequence_length=T5_SEQUENCE_LENGTH,
                    input_image=source,
                    denoising_strength=request.denoising_strength,
                    height=request.height,
                    width=request.width,
                    seed=request.image_seed(index),
                    rand_device="cpu",  # same seed, same noise on any GPU
                    num_inference_steps=request.steps,
                    progress_bar_cmd=_progress(
                        on_step, self._device, done=index * request.steps, total=request.total_steps
                    ),
                )
                images.append(image)
        except BaseException:
            # Cancelled between steps, out of memory mid-block, ...: leave the streams consistent.
            self._dit_blocks.recover()
            self._t5_blocks.recover()
            self._t5_blocks.release_slots()
            raise
        finally:
            self._encoder.forget()
        return images

    def describe(self) -> tuple[str, str]:
        """(model files, memory strategy) for logs and PNG metadata."""
        t5 = "T5 fp8-stored" if self._settings.text_encoder_storage == "fp8" else "T5 bf16"
        return self._paths.file_names, f"{self._plan.strategy}, {self._matmul}, {t5}"

    def reduce_memory(self) -> bool:
        """After an out-of-memory error: plan for three quarters of the budget, for the retry of that job
        only. False if nothing changes."""
        try:
            plan = self._plan_for(int(self._plan.budget_bytes * REDUCE_FACTOR))
        except EngineStartError:
            return False
        if plan.dit.resident == self._plan.dit.resident:
            return False
        self._apply(plan)
        self._plans.reduce(plan)
        log.warning("reduced GPU memory use after out-of-memory: %s", plan.strategy)
        return True

    def _apply(self, plan: EnginePlan) -> None:
        self._dit_blocks.recover()
        self._dit_blocks.apply(plan.dit)

    @property
    def _plan(self) -> EnginePlan:
        return self._plans.current

    @property
    def largest_square(self) -> int:
        """The side of the largest square image the plan's room holds (for messages and the log)."""
        side = largest_square_side(self._plan.workspace_bytes)
        return min(side, int(self._settings.max_pixels**0.5) // 64 * 64)


def _outside_bytes(model: torch.nn.Module, blocks: StreamedBlocks) -> int:
    """Bytes of a model's tensors outside its blocks, as they will be stored (from the empty shells)."""
    inside = {id(m) for b in blocks.modules for m in b.modules()}
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if id(module) in inside:
            continue
        for name, tensor in [*module._parameters.items(), *module._buffers.items()]:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            total += tensor.numel() * blocks.dtype_of(module, name, tensor)[0].itemsize
    return total


def _trim_heap() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise); a no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _progress(
    on_step: StepCallback, device: torch.device, *, done: int = 0, total: int | None = None
) -> Callable[[Iterable[T]], Iterator[T]]:
    """DiffSynth's `progress_bar_cmd`: a generator over the timesteps that reports each finished step,
    counted over the whole job (`done` steps of earlier images before these, `total` in all).

    Waits for the GPU after each step so that progress is real and a cancel acts within one step.
    """

    def wrap(timesteps: Iterable[T]) -> Iterator[T]:
        items = list(timesteps)
        for step, item in enumerate(items, start=1):
            yield item
            torch.cuda.current_stream(device).synchronize()
            on_step(done + step, total if total is not None else len(items))

    return wrap


def _pil(raw: RawImage) -> Image:
    """The request's input pixels (already its size) as the PIL image the pipeline takes."""
    from PIL import Image as PILImage

    return PILImage.frombytes(raw.mode, (raw.width, raw.height), raw.pixels).convert("RGB")


def create_backend(settings: EngineSettings, report: LoadReporter) -> DiffSynthBackend:
    """The factory named by `engine.backend = "diffsynth"`."""
    return DiffSynthBackend(settings, report)
