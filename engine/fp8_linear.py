"""Linear layers whose weights are stored in float8_e4m3fn.

How an `Fp8Linear` multiplies is a `MatmulMode`, chosen once per process by `choose_matmul`, which
measures the candidates on FLUX-sized layers and takes the fastest whose error is acceptable:
- bf16: the weight is converted to bf16 for each call (any GPU, any shape).
- fp8 (`torch._scaled_mm`, compute capability 8.9 and up): the activation is quantised to float8 with a
  dynamic scale, one per tensor or one per row; weights are used as stored (scale 1); the matmul may use
  fast accumulation. Activations with a row count that is no multiple of 16 (the modulation layers: one
  row per image) are padded with zero rows instead of converting the weight to bf16.
- Optionally (`choose_matmul(..., compiled=True)`), the quantisation as one `torch.compile`d function
  (max, scale and cast fused, compiled once for all shapes). It wins the layer benchmark below but was
  slower over whole images in the one end-to-end run so far (docs/performance.md): its per-call CPU
  overhead is not in the layer benchmark. Off by default until measured otherwise.
Every mode is deterministic: the same input gives the same bits (maxima are exact, no atomics).

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0
_MAX_REL_ERROR = 0.08
# _scaled_mm needs every matrix dimension to be a multiple of this; activations are padded with rows.
_MM_MULTIPLE = 16
_ones_cache: dict[tuple[torch.device, int], torch.Tensor] = {}
Quantiser = Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True, slots=True)
class MatmulMode:
    """How an Fp8Linear multiplies; `str()` names it in logs and in the PNG's strategy text."""

    fp8: bool
    rowwise: bool = False  # one activation scale per row, else one per tensor
    compiled: bool = False  # the quantisation is one torch.compile'd function
    fast_accum: bool = False  # _scaled_mm's use_fast_accum

    BF16: ClassVar[MatmulMode]
    FP8_ROWWISE: ClassVar[MatmulMode]
    FP8_TENSORWISE: ClassVar[MatmulMode]

    def __str__(self) -> str:
        if not self.fp8:
            return "bf16 matmul"
        text = f"fp8 {'row-wise' if self.rowwise else 'tensor-wise'} matmul"
        if self.compiled:
            text += ", compiled quantisation"
        if self.fast_accum:
            text += ", fast accumulation"
        return text


MatmulMode.BF16 = MatmulMode(fp8=False)
MatmulMode.FP8_ROWWISE = MatmulMode(fp8=True, rowwise=True)
MatmulMode.FP8_TENSORWISE = MatmulMode(fp8=True)


def _ones(device: torch.device, n: int) -> torch.Tensor:
    """Weight scales: (1, n) ones for row-wise, a single one (n == 0) for tensor-wise."""
    key = (device, n)
    ones = _ones_cache.get(key)
    if ones is None:
        ones = torch.ones((1, n) if n else (), dtype=torch.float32, device=device)
        _ones_cache[key] = ones
    return ones


def quantise_eager(x2: torch.Tensor, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 x2 / scale, float32 scale) for a 2-D x2: one reduction, one multiply, one cast."""
    if rowwise:
        amax = torch.linalg.vector_norm(x2, ord=float("inf"), dim=1, keepdim=True).float()
    else:
        amax = torch.linalg.vector_norm(x2, ord=float("inf")).float()
    scale = amax.div_(_FP8_MAX).clamp_(min=1e-12)
    xq = (x2 * scale.reciprocal().to(x2.dtype)).to(FP8)
    return xq, scale


def quantise_fusable(x2: torch.Tensor, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The same quantisation written for torch.compile: float32 math, clamped into float8's range,
    so that the compiler makes it one reduction and one pointwise pass."""
    xf = x2.float()
    amax = xf.abs().amax(dim=1, keepdim=True) if rowwise else xf.abs().amax()
    scale = (amax / _FP8_MAX).clamp(min=1e-12)
    xq = (xf / scale).clamp(-_FP8_MAX, _FP8_MAX).to(FP8)
    return xq, scale


_compiled: Quantiser | None = None
_compile_failed = False


def compiled_quantiser() -> Quantiser | None:
    """`quantise_fusable` compiled once for all shapes (dynamic), or None where it cannot compile."""
    global _compiled
    if _compile_failed:
        return None
    if _compiled is None:
        import torch._inductor.config as inductor_config

        # Two small kernels: compiling them in this process beats starting a pool of compile workers.
        inductor_config.compile_threads = 1
        _compiled = torch.compile(quantise_fusable, dynamic=True, fullgraph=True)
    return _compiled


def _mark_compile_failed(exc: BaseException) -> None:
    global _compile_failed
    _compile_failed = True
    log.warning("compiled fp8 quantisation unavailable here (%s: %s)", type(exc).__name__, exc)


def fp8_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    mode: MatmulMode,
    quantise: Quantiser = quantise_eager,
) -> torch.Tensor:
    """x @ weight.T (+ bias) with dynamic float8 quantisation of x, in `mode` (an fp8 mode)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    rows = x2.shape[0]
    pad = -rows % _MM_MULTIPLE
    if pad:
        # Zero rows change no maximum; the modulation layers (one row per image) gain most: their
        # float8 weight is read once instead of being converted to bf16 on every call.
        x2 = F.pad(x2, (0, 0, 0, pad))
    xq, scale = quantise(x2, mode.rowwise)
    out = torch._scaled_mm(
        xq,
        weight.t(),
        scale_a=scale,
        scale_b=_ones(x.device, weight.shape[0] if mode.rowwise else 0),
        bias=bias,
        out_dtype=out_dtype,
        use_fast_accum=mode.fast_accum,
    )
    if pad:
        out = out[:rows]
    return out.reshape(*shape[:-1], weight.shape[0])


class Fp8Linear(torch.nn.Module):
    """Drop-in for nn.Linear with a float8 weight and a compute-dtype bias."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype, mode: MatmulMode) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.compute_dtype = compute_dtype
        self.weight = torch.nn.Parameter(linear.weight.detach().to(FP8), requires_grad=False)
        self.bias: torch.nn.Parameter | None
        if linear.bias is not None:
            self.bias = torch.nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
        else:
            self.bias = None
        # The weight's dimensions cannot be padded for free, unlike the activation's rows.
        fits = self.in_features % _MM_MULTIPLE == 0 and self.out_features % _MM_MULTIPLE == 0
        self.mode = mode if fits else MatmulMode.BF16
        quantise = compiled_quantiser() if self.mode.compiled else quantise_eager
        if quantise is None:
            self.mode = MatmulMode(fp8=True, rowwise=mode.rowwise, fast_accum=mode.fast_accum)
            quantise = quantise_eager
        self._quantise: Quantiser = quantise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode.fp8:
            x = x.to(self.compute_dtype)
            return fp8_matmul(x, self.weight, self.bias, self.compute_dtype, self.mode, self._quantise)
        return F.linear(x.to(self.compute_dtype), self.weight.to(self.compute_dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.mode}"


@dataclass(frozen=True, slots=True)
class MatmulChoice:
    mode: MatmulMode
    errors: dict[MatmulMode, float]  # relative error against float32, per mode tried
    milliseconds: dict[MatmulMode, float]  # two FLUX-sized layers, quantisation included
    compile_seconds: float = 0.0  # first calls of the compiled quantisation (part of load time)

    def summary(self) -> str:
        """One line for the log: each mode's time and error."""
        parts = [
            f"{mode}: {self.milliseconds.get(mode, float('nan')):.3f} ms, error {err:.4f}"
            for mode, err in self.errors.items()
        ]
        return f"{self.mode} (compile {self.compile_seconds:.1f} s; " + "; ".join(parts) + ")"


def _time_ms(fn: Callable[[], torch.Tensor], repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / repeats


def candidate_modes(compiled: bool = False) -> list[MatmulMode]:
    """Every mode worth measuring on an fp8-capable GPU (with `compiled`, the compiled quantisation's
    too), bf16 last (the fallback)."""
    fp8 = [
        MatmulMode(fp8=True, rowwise=rowwise, compiled=with_compile, fast_accum=fast_accum)
        for with_compile in ((False, True) if compiled else (False,))
        for rowwise in (False, True)
        for fast_accum in (False, True)
    ]
    return [*fp8, MatmulMode.BF16]


@torch.no_grad()  # as in the pipeline: the compiled quantisation is specialised on grad mode
def choose_matmul(device: torch.device, compiled: bool = False) -> MatmulChoice:
    """Measure the modes on two layers of a FLUX single block at 1024x1024 (4608 tokens: 3072 -> 12288
    and 15360 -> 3072) and pick the fastest whose error is acceptable. bf16 on GPUs without fp8.
    `compiled`: also try the compiled quantisation (a few seconds of compiling)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return MatmulChoice(MatmulMode.BF16, {}, {})
    gen = torch.Generator(device=device).manual_seed(0)
    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for k, n in ((3072, 12288), (15360, 3072)):
        x = torch.randn((4608, k), device=device, generator=gen).to(torch.bfloat16)
        w = (torch.randn((n, k), device=device, generator=gen) * 0.02).to(FP8)
        b = (torch.randn((n,), device=device, generator=gen) * 0.02).to(torch.bfloat16)
        layers.append((x, w, b, F.linear(x.float(), w.float(), b.float())))
    errors: dict[MatmulMode, float] = {}
    times: dict[MatmulMode, float] = {}
    compile_seconds = 0.0
    for mode in candidate_modes(compiled):
        quantise: Quantiser | None = quantise_eager
        if mode.compiled:
            quantise = compiled_quantiser()
            if quantise is None:
                continue

        def run(layer: int, mode: MatmulMode = mode, quantise: Quantiser | None = quantise) -> torch.Tensor:
            x, w, b, _ = layers[layer]
            if not mode.fp8:
                return F.linear(x, w.to(torch.bfloat16), b)
            assert quantise is not None
            return fp8_matmul(x, w, b, torch.bfloat16, mode, quantise)

        started = time.perf_counter()
        try:
            outs = [run(i).float() for i in range(len(layers))]
        except Exception as exc:  # unsupported here (old cuBLAS, no Triton, ...): not a candidate
            if mode.compiled:
                _mark_compile_failed(exc)
            else:
                log.warning("%s unavailable here (%s)", mode, exc)
            continue
        if mode.compiled:
            torch.cuda.synchronize(device)
            compile_seconds += time.perf_counter() - started
        err = max(float((out - ref).norm() / ref.norm()) for out, (*_, ref) in zip(outs, layers, strict=True))
        errors[mode] = err
        if not err < _MAX_REL_ERROR:  # also catches NaN
            log.warning("%s relative error %.3g is too large; not used", mode, err)
            continue
        times[mode] = sum(_time_ms(functools.partial(run, i)) for i in range(len(layers)))
    mode = min(times, key=lambda m: times[m]) if times else MatmulMode.BF16
    return MatmulChoice(mode, errors, times, compile_seconds)


def convert_linears(model: torch.nn.Module, compute_dtype: torch.dtype, mode: MatmulMode) -> int:
    """Replace every nn.Linear in `model` with Fp8Linear and cast all other floating tensors to
    `compute_dtype` (norm scales and embeddings gain nothing from float8). Returns layers replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Fp8Linear(child, compute_dtype, mode))
                replaced += 1
    for module in model.modules():
        if isinstance(module, Fp8Linear):
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != compute_dtype:
                param.data = param.data.to(compute_dtype)
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_floating_point() and buf.dtype == FP8:
                module._buffers[name] = buf.to(compute_dtype)
    return replaced
