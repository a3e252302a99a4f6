"""Host RAM the engine needs for a given amount of free VRAM, and what the machine has (pure + /proc).

A first model for `majicbot doctor`, from the model set's sizes and the measured peaks in
docs/performance.md (22.9 / 24.3 / 28.7 GiB of peak host RAM with no cap / 12 GiB / 8 GiB):
the weights that do not fit on the GPU are streamed from page-locked host memory, and while loading
the DiT's transient host copy exists next to them. To be reconciled with the engine's own plan
(`engine/vram_plan.py`), which is the authority on what stays resident.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GB = 10**9
GIB = 2**30

DIT_BYTES = int(11.9 * GB)  # 11.9 G parameters stored as float8
T5_BYTES = int(9.52 * GB)  # T5-XXL encoder, 4.76 G parameters in bf16
CLIP_BYTES = int(0.24 * GB)  # CLIP-L, 0.12 G parameters in bf16
VAE_BYTES = int(0.16 * GB)  # 0.08 G parameters in bf16
WEIGHTS_BYTES = DIT_BYTES + T5_BYTES + CLIP_BYTES + VAE_BYTES

GPU_WORKSPACE_BYTES = int(2.9 * GIB)  # activations and VAE decode, plus allocator slack
PROCESS_OVERHEAD_BYTES = int(2.6 * GIB)  # interpreter, torch, CUDA host state, tokenizers
MIN_FREE_VRAM_BYTES = int(5.5 * GIB)  # a 6 GB card after the CUDA context


def required_host_ram_bytes(vram_free_bytes: int) -> int:
    """Peak host RAM of the engine with ``vram_free_bytes`` of GPU memory to use."""
    resident = min(max(vram_free_bytes - GPU_WORKSPACE_BYTES, 0), WEIGHTS_BYTES)
    streamed = WEIGHTS_BYTES - resident
    # Loading holds every weight once on the host; with streaming the pinned arena plus the DiT's
    # transient copy can be more.
    return PROCESS_OVERHEAD_BYTES + max(WEIGHTS_BYTES, streamed + DIT_BYTES)


@dataclass(frozen=True, slots=True)
class HostMemory:
    total_bytes: int
    available_bytes: int


def read_host_memory(meminfo: Path = Path("/proc/meminfo")) -> HostMemory | None:
    """MemTotal and MemAvailable from Linux's /proc/meminfo (None where it does not exist)."""
    try:
        text = meminfo.read_text(encoding="ascii")
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * 1024  # reported in kB
    if "MemTotal" not in values:
        return None
    return HostMemory(values["MemTotal"], values.get("MemAvailable", values.get("MemFree", 0)))
