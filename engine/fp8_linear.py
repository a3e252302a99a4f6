"""Linear layers whose weights are stored in float8_e4m3fn.

Three ways to compute; `choose_matmul` picks one per process by measuring them on a FLUX-sized layer:
- fp8 matmul, row-wise (`torch._scaled_mm`, compute capability 8.9 and up): each activation row is
  quantised to float8 with its own dynamic scale; weights are used as stored (scale 1).
- fp8 matmul, tensor-wise: one dynamic scale for the whole activation (cuBLASLt's fp8 kernels).
- upcast: the weight is converted to bf16 for each call (any GPU, any shape).
The fp8 modes are only eligible when their error against a float32 reference is small.

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0
_MAX_REL_ERROR = 0.08
_ones_cache: dict[tuple[torch.device, int], torch.Tensor] = {}


class MatmulMode(enum.StrEnum):
    FP8_ROWWISE = "fp8 row-wise matmul"
    FP8_TENSORWISE = "fp8 tensor-wise matmul"
    BF16 = "bf16 matmul"


def _ones(device: torch.device, n: int) -> torch.Tensor:
    """Weight scales: (1, n) ones for row-wise, a single one (n == 0) for tensor-wise."""
    key = (device, n)
    ones = _ones_cache.get(key)
    if ones is None:
        ones = torch.ones((1, n) if n else (), dtype=torch.float32, device=device)
        _ones_cache[key] = ones
    return ones


def fp8_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype, rowwise: bool
) -> torch.Tensor:
    """x @ weight.T (+ bias) with dynamic float8 quantisation of x (per row or per tensor)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    # Few passes over the activation: one reduction for the maxima, one multiply, one cast.
    if rowwise:
        amax = torch.linalg.vector_norm(x2, ord=float("inf"), dim=1, keepdim=True).float()
    else:
        amax = torch.linalg.vector_norm(x2, ord=float("inf")).float()
    scale = amax.div_(_FP8_MAX).clamp_(min=1e-12)
    xq = (x2 * scale.reciprocal().to(x2.dtype)).to(FP8)
    out = torch._scaled_mm(
        xq,
        weight.t(),
        scale_a=scale,
        scale_b=_ones(x.device, weight.shape[0] if rowwise else 0),
        bias=bias,
        out_dtype=out_dtype,
    )
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
        # _scaled_mm needs both weight dimensions to be multiples of 16.
        fits = self.in_features % 16 == 0 and self.out_features % 16 == 0
        self.mode = mode if fits else MatmulMode.BF16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is not MatmulMode.BF16 and x.is_cuda and x.numel() // x.shape[-1] % 16 == 0:
            rowwise = self.mode is MatmulMode.FP8_ROWWISE
            return fp8_matmul(x, self.weight, self.bias, self.compute_dtype, rowwise)
        return F.linear(x.to(self.compute_dtype), self.weight.to(self.compute_dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.mode}"


@dataclass(frozen=True, slots=True)
class MatmulChoice:
    mode: MatmulMode
    errors: dict[MatmulMode, float]  # relative error against float32, per mode tried
    milliseconds: dict[MatmulMode, float]  # one FLUX-sized layer, quantisation included


def _time_ms(fn: Callable[[], torch.Tensor], repeats: int = 10) -> float:
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


def choose_matmul(device: torch.device) -> MatmulChoice:
    """Measure the modes on a 4608x3072 @ 3072x12288 layer (a FLUX MLP at 1024x1024) and pick the
    fastest whose error is acceptable. bf16 on GPUs without fp8 matmuls."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return MatmulChoice(MatmulMode.BF16, {}, {})
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((4608, 3072), device=device, generator=gen).to(torch.bfloat16)
    w = (torch.randn((12288, 3072), device=device, generator=gen) * 0.02).to(FP8)
    b = (torch.randn((12288,), device=device, generator=gen) * 0.02).to(torch.bfloat16)
    ref = F.linear(x.float(), w.float(), b.float())
    errors: dict[MatmulMode, float] = {}
    times: dict[MatmulMode, float] = {}
    candidates: dict[MatmulMode, Callable[[], torch.Tensor]] = {
        MatmulMode.FP8_ROWWISE: lambda: fp8_matmul(x, w, b, torch.bfloat16, rowwise=True),
        MatmulMode.FP8_TENSORWISE: lambda: fp8_matmul(x, w, b, torch.bfloat16, rowwise=False),
        MatmulMode.BF16: lambda: F.linear(x, w.to(torch.bfloat16), b),
    }
    for mode, fn in candidates.items():
        try:
            out = fn().float()
        except (RuntimeError, NotImplementedError) as exc:
            log.warning("%s unavailable here (%s)", mode, exc)
            continue
        err = float((out - ref).norm() / ref.norm())
        errors[mode] = err
        if not err < _MAX_REL_ERROR:  # also catches NaN
            log.warning("%s relative error %.3g is too large; not used", mode, err)
            continue
        times[mode] = _time_ms(fn)
    mode = min(times, key=lambda m: times[m]) if times else MatmulMode.BF16
    return MatmulChoice(mode, errors, times)


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
