"""Linear layers whose weights are stored in float8_e4m3fn.

How an `Fp8Linear` multiplies is a `MatmulMode`, fixed by the `engine.matmul` setting (never chosen by
timing at start, so the same seed gives the same pixels after every restart):
- bf16 (the default): the weight is converted to bf16 for each call, as the majicflus WebUI computed;
  the result is bit-identical to DiffSynth's own pipeline on the same weights.
- fp8 (`torch._scaled_mm`, compute capability 8.9 and up): the activation is quantised to float8 with one
  dynamic scale per tensor, the weight is used as stored (scale 1), with fast accumulation. Faster, and
  further from bf16 (docs/performance.md gives both figures). Activations with a row count that is no
  multiple of 16 (the modulation layers: one row per image) are padded with zero rows.
Every mode is deterministic: the same input gives the same bits (maxima are exact, no atomics).

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0
# _scaled_mm needs every matrix dimension to be a multiple of this; activations are padded with rows.
_MM_MULTIPLE = 16
_ones_cache: dict[tuple[torch.device, int], torch.Tensor] = {}


@dataclass(frozen=True, slots=True)
class MatmulMode:
    """How an Fp8Linear multiplies; `str()` names it in logs and in the PNG's strategy text."""

    fp8: bool
    rowwise: bool = False  # one activation scale per row, else one per tensor
    fast_accum: bool = False  # _scaled_mm's use_fast_accum

    BF16: ClassVar[MatmulMode]
    FP8_ROWWISE: ClassVar[MatmulMode]
    FP8_TENSORWISE: ClassVar[MatmulMode]

    def __str__(self) -> str:
        if not self.fp8:
            return "bf16 matmul"
        text = f"fp8 {'row-wise' if self.rowwise else 'tensor-wise'} matmul"
        if self.fast_accum:
            text += ", fast accumulation"
        return text


MatmulMode.BF16 = MatmulMode(fp8=False)
MatmulMode.FP8_ROWWISE = MatmulMode(fp8=True, rowwise=True)
MatmulMode.FP8_TENSORWISE = MatmulMode(fp8=True)
FP8_DEFAULT = MatmulMode(fp8=True, fast_accum=True)
"""What `engine.matmul = "fp8"` runs: the fastest fp8 mode measured in run D (docs/performance.md)."""


def matmul_mode(setting: str, device: torch.device) -> MatmulMode:
    """The mode `engine.matmul` names; fp8 where the GPU has no fp8 matmuls falls back to bf16."""
    if setting != "fp8":
        return MatmulMode.BF16
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        log.warning('engine.matmul = "fp8" needs compute capability 8.9 or newer; using bf16 matmuls')
        return MatmulMode.BF16
    return FP8_DEFAULT


def _ones(device: torch.device, n: int) -> torch.Tensor:
    """Weight scales: (1, n) ones for row-wise, a single one (n == 0) for tensor-wise."""
    key = (device, n)
    ones = _ones_cache.get(key)
    if ones is None:
        ones = torch.ones((1, n) if n else (), dtype=torch.float32, device=device)
        _ones_cache[key] = ones
    return ones


def quantise(x2: torch.Tensor, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 x2 / scale, float32 scale) for a 2-D x2: one reduction, one multiply, one cast."""
    if rowwise:
        amax = torch.linalg.vector_norm(x2, ord=float("inf"), dim=1, keepdim=True).float()
    else:
        amax = torch.linalg.vector_norm(x2, ord=float("inf")).float()
    scale = amax.div_(_FP8_MAX).clamp_(min=1e-12)
    xq = (x2 * scale.reciprocal().to(x2.dtype)).to(FP8)
    return xq, scale


def scaled_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(float8 weight / scale, scale) with one scale for the whole tensor, its largest value mapped to
    float8's largest: small weights stay out of float8's coarse subnormal range (below 2**-6), where
    a plain cast would lose most of their precision."""
    amax = float(weight.abs().amax().float())
    scale = max(amax / _FP8_MAX, 1e-12)
    return (weight.float() / scale).to(FP8), scale


def fp8_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    mode: MatmulMode,
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode.fp8:
            x = x.to(self.compute_dtype)
            return fp8_matmul(x, self.weight, self.bias, self.compute_dtype, self.mode)
        return F.linear(x.to(self.compute_dtype), self.weight.to(self.compute_dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.mode}"


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
