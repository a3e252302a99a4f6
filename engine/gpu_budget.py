"""How much GPU memory the engine may plan with: measured on the card as it is when the engine starts.

A real card is shared with a desktop, and this process itself holds memory that torch's allocator never
sees: the CUDA context and the kernels that libraries load on first use (cuBLAS, cuDNN, attention).
So the budget starts from what is free once our context exists, less what a warm-up of the pipeline's
kernels costs outside the allocator, less an allowance for kernels loaded later and a spare margin.
An operator's `engine.vram_budget_gib` caps the whole process's use of the card, context included.

Runs only inside the GPU worker process (imports torch).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.memory_model import GIB, MIB

log = logging.getLogger(__name__)

SPARE_BYTES = 256 * MIB  # left free on the card at the engine's peak
LATE_KERNEL_BYTES = 192 * MIB  # kernels first loaded by shapes the warm-up did not use
ALLOCATOR_SLACK_BYTES = 192 * MIB  # the caching allocator's rounding and fragmentation
CONTEXT_ESTIMATE_BYTES = 512 * MIB  # the CUDA context, where the driver cannot tell us ours


@dataclass(frozen=True, slots=True)
class CardMemory:
    """The card as this process found it (bytes)."""

    total: int
    free_after_context: int  # free once this process's CUDA context exists
    context: int  # this process's CUDA context (measured through NVML, else estimated)
    kernels: int  # outside the allocator after the kernel warm-up

    def allocator_budget(self, operator_budget: int | None) -> int:
        """What torch's allocator may hold at its peak."""
        outside = self.kernels + LATE_KERNEL_BYTES + ALLOCATOR_SLACK_BYTES
        budget = self.free_after_context - outside - SPARE_BYTES
        if operator_budget is not None:
            budget = min(budget, operator_budget - self.context - outside)
        return budget

    def describe(self, operator_budget: int | None) -> str:
        text = (
            f"{self.free_after_context / GIB:.2f} GiB free of {self.total / GIB:.1f} GiB after this "
            f"process's CUDA context ({self.context / GIB:.2f} GiB); kernels {self.kernels / GIB:.2f} GiB"
        )
        if operator_budget is not None:
            text += f"; engine.vram_budget_gib {operator_budget / GIB:.2f} GiB"
        return text


def _process_context_bytes(device: torch.device) -> int | None:
    """This process's use of the card as the driver reports it (NVML), or None where unavailable."""
    try:
        import pynvml  # nvidia-ml-py, which torch's CUDA builds install
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory:
                    return int(proc.usedGpuMemory)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # no driver access in a container, a mismatched library, ...
        log.debug("NVML could not report this process's GPU memory: %s", exc)
    return None


def _warm_kernels(device: torch.device, fp8: bool) -> None:
    """Run each kind of kernel the pipeline uses once, on tiny inputs, so their code is loaded now."""
    bf16 = torch.bfloat16
    with torch.no_grad():
        x = torch.randn(64, 256, device=device, dtype=bf16)
        w = torch.randn(512, 256, device=device, dtype=bf16)
        F.gelu(F.linear(x, w, torch.zeros(512, device=device, dtype=bf16)), approximate="tanh")
        F.layer_norm(x, (256,))
        for head_dim in (64, 128, 512):  # T5, the DiT, the VAE's one wide head
            q = torch.randn(1, 2, 64, head_dim, device=device, dtype=bf16)
            F.scaled_dot_product_attention(q, q, q)
        image = torch.randn(1, 32, 16, 16, device=device, dtype=bf16)
        conv = torch.randn(32, 32, 3, 3, device=device, dtype=bf16)
        F.silu(F.group_norm(F.conv2d(image, conv, padding=1), 8))
        F.interpolate(image, scale_factor=2.0, mode="nearest")
        if fp8 and torch.cuda.get_device_capability(device) >= (8, 9):
            a = torch.randn(16, 64, device=device).to(torch.float8_e4m3fn)
            b = torch.randn(32, 64, device=device).to(torch.float8_e4m3fn)
            one = torch.ones((), device=device)
            torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=bf16)
    torch.cuda.synchronize(device)


def outside_allocator_bytes(device: torch.device, free_after_context: int) -> int:
    """This process's use of the card beyond its context that torch's allocator does not hold."""
    free, _ = torch.cuda.mem_get_info(device)
    return max(0, free_after_context - free - torch.cuda.memory_reserved(device))


def measure_card(device: torch.device, fp8: bool = False) -> CardMemory:
    """Create the context, warm the kernels, and measure what is left (call before any weights load)."""
    torch.cuda.set_device(device)
    torch.empty(1, device=device)
    free, total = torch.cuda.mem_get_info(device)
    _warm_kernels(device, fp8)
    kernels = outside_allocator_bytes(device, free)
    torch.cuda.empty_cache()
    context = _process_context_bytes(device)
    if context is None:
        context = CONTEXT_ESTIMATE_BYTES
    else:
        context = max(0, context - kernels - torch.cuda.memory_reserved(device))
    return CardMemory(total=total, free_after_context=free, context=context, kernels=kernels)
