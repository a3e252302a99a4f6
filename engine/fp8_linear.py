"""Linear layers whose weights are stored in float8_e4m3fn.

Two ways to compute, chosen once per process by `probe_scaled_mm`:
- fp8 matmul (`torch._scaled_mm`, GPUs of compute capability 8.9 and up): activations are quantised
  per row to float8 with a dynamic scale, weights are used as stored (scale 1): about twice the
  bf16 matmul rate and no bf16 copy of the weight.
- upcast: the weight is converted to bf16 for each call (any GPU, any shape).

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0
_ones_cache: dict[tuple[torch.device, int], torch.Tensor] = {}


def _ones_row(device: torch.device, n: int) -> torch.Tensor:
    key = (device, n)
    ones = _ones_cache.get(key)
    if ones is None:
        ones = torch.ones((1, n), dtype=torch.float32, device=device)
        _ones_cache[key] = ones
    return ones


def fp8_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    """x @ weight.T (+ bias) with row-wise dynamic float8 quantisation of x."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    # Few passes over the activation: one reduction for the row maxima, one multiply, one cast.
    amax = torch.linalg.vector_norm(x2, ord=float("inf"), dim=1, keepdim=True).float()
    scale = amax.div_(_FP8_MAX).clamp_(min=1e-12)
    xq = (x2 * scale.reciprocal().to(x2.dtype)).to(FP8)
    out = torch._scaled_mm(
        xq,
        weight.t(),
        scale_a=scale,
        scale_b=_ones_row(x.device, weight.shape[0]),
        bias=bias,
        out_dtype=out_dtype,
    )
    return out.reshape(*shape[:-1], weight.shape[0])


class Fp8Linear(torch.nn.Module):
    """Drop-in for nn.Linear with a float8 weight and a compute-dtype bias."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype, use_fp8_matmul: bool) -> None:
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
        self.use_fp8_matmul = use_fp8_matmul and self.in_features % 16 == 0 and self.out_features % 16 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fp8_matmul and x.is_cuda and x.numel() // x.shape[-1] % 16 == 0:
            return fp8_matmul(x, self.weight, self.bias, self.compute_dtype)
        return F.linear(x.to(self.compute_dtype), self.weight.to(self.compute_dtype), self.bias)

    def extra_repr(self) -> str:
        mode = "fp8 matmul" if self.use_fp8_matmul else "upcast"
        return f"in={self.in_features}, out={self.out_features}, {mode}"


def probe_scaled_mm(device: torch.device) -> tuple[bool, float]:
    """Whether fp8 matmuls work here, and their relative error against the upcast path on random data."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        return False, 0.0
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((256, 512), device=device, generator=gen, dtype=torch.float32).to(torch.bfloat16)
    w = (torch.randn((384, 512), device=device, generator=gen) * 0.05).to(FP8)
    b = torch.randn((384,), device=device, generator=gen).to(torch.bfloat16)
    ref = F.linear(x.float(), w.float(), b.float())
    try:
        out = fp8_matmul(x, w, b, torch.bfloat16).float()
    except (RuntimeError, NotImplementedError) as exc:
        log.warning("fp8 matmul unavailable (%s); computing in bf16", exc)
        return False, 0.0
    err = float((out - ref).norm() / ref.norm())
    if not err < 0.08:  # also catches NaN
        log.warning("fp8 matmul relative error %.3g is too large; computing in bf16", err)
        return False, err
    return True, err


def convert_linears(model: torch.nn.Module, compute_dtype: torch.dtype, use_fp8_matmul: bool) -> int:
    """Replace every nn.Linear in `model` with Fp8Linear and cast all other floating tensors to
    `compute_dtype` (norm scales and embeddings gain nothing from float8). Returns layers replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Fp8Linear(child, compute_dtype, use_fp8_matmul))
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
