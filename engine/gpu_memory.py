"""GPU memory in the worker process: clearing torch's cache after a job, and reporting what is held.

Never imports torch itself: when the backend has not imported it (or CUDA is absent) there is no GPU
memory to manage and every report is zeros. Functions are looked up on `torch.cuda` at call time.
"""

from __future__ import annotations

import gc
import sys
from types import ModuleType

from engine.messages import MemoryReport

NO_MEMORY = MemoryReport(allocated=0, reserved=0, peak_reserved=0, free_on_device=0, total_on_device=0)


def _cuda_torch() -> ModuleType | None:
    """torch, if the backend imported it and CUDA is usable; else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch


def memory_report(device: str) -> MemoryReport:
    """What torch's caching allocator holds on `device`, and what the device has free."""
    torch = _cuda_torch()
    if torch is None:
        return NO_MEMORY
    free, total = torch.cuda.mem_get_info(device)
    return MemoryReport(
        allocated=int(torch.cuda.memory_allocated(device)),
        reserved=int(torch.cuda.memory_reserved(device)),
        peak_reserved=int(torch.cuda.max_memory_reserved(device)),
        free_on_device=int(free),
        total_on_device=int(total),
    )


def free_cached_memory(device: str) -> MemoryReport:
    """Drop unreachable tensors and return torch's cached blocks to the driver; report what is left.

    Call it after every job, success or failure, with no exception object alive (a traceback keeps
    the frames, and so the tensors, of the failed call).
    """
    gc.collect()
    torch = _cuda_torch()
    if torch is None:
        return NO_MEMORY
    torch.cuda.empty_cache()
    return memory_report(device)


def reset_peak(device: str) -> None:
    """Start a new peak measurement, so that each job reports its own peak."""
    torch = _cuda_torch()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats(device)


def device_name(device: str) -> str:
    """The GPU's name, or "cpu" without CUDA."""
    torch = _cuda_torch()
    if torch is None:
        return "cpu"
    return str(torch.cuda.get_device_name(device))
