"""Host RAM: what the engine's plan needs, what the machine has, and the engine's own peak.

Pure (no torch), so `majicbot doctor` can use it in the chat process. Streamed DiT blocks and all of T5
live in page-locked host memory for as long as the worker runs; on top comes the program itself
(Python, torch's CUDA libraries, DiffSynth), measured by `bench/calibrate_memory.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.memory_model import GIB, MIB, planned_room_bytes

PROGRAM_BYTES = int(2.0 * GIB)  # the worker without weights: Python, torch + CUDA, DiffSynth (1.5 measured)
STAGING_BYTES = 512 * MIB  # staging while loading, and the CLIP and VAE checkpoints read in
# The model set's sizes as the engine stores them (float8 DiT and T5 linears, bf16 elsewhere).
DIT_BYTES = int(11.9e9)
T5_BYTES = int(4.9e9)
GPU_FIXED_BYTES = int(0.75 * GIB)  # CLIP, VAE, the DiT's and T5's parts outside their blocks
DIT_SLOT_BYTES = int(2 * 0.34e9)  # two slots of the largest (double) block


@dataclass(frozen=True, slots=True)
class HostNeed:
    """Host RAM the worker will hold (bytes)."""

    streamed_weights: int  # DiT blocks not resident on the GPU, and T5

    @property
    def total(self) -> int:
        return PROGRAM_BYTES + STAGING_BYTES + self.streamed_weights

    def describe(self) -> str:
        return (
            f"{self.total / GIB:.1f} GiB ({self.streamed_weights / GIB:.1f} GiB of weights streamed from "
            f"host memory + {(PROGRAM_BYTES + STAGING_BYTES) / GIB:.1f} GiB for the program)"
        )


def estimated_need(free_vram_bytes: int, max_pixels: int = 2048 * 2048) -> HostNeed:
    """A plan-free estimate from the card's free memory (for `majicbot doctor`): the DiT blocks that do
    not fit beside the working room stream from host memory, and so does T5."""
    room = free_vram_bytes - GIB - GPU_FIXED_BYTES - planned_room_bytes(max_pixels) - DIT_SLOT_BYTES
    resident = min(DIT_BYTES, max(0, room))
    return HostNeed(streamed_weights=DIT_BYTES - resident + T5_BYTES)


@dataclass(frozen=True, slots=True)
class HostMemory:
    """/proc/meminfo's view of the machine (bytes)."""

    total: int
    available: int
    swap_free: int


def read_meminfo(path: Path = Path("/proc/meminfo")) -> HostMemory | None:
    """The machine's memory, or None where /proc/meminfo does not exist (not Linux)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    return HostMemory(
        total=fields.get("MemTotal", 0),
        available=fields.get("MemAvailable", fields.get("MemFree", 0)),
        swap_free=fields.get("SwapFree", 0),
    )


def shortfall(need: HostNeed, machine: HostMemory) -> str | None:
    """Why the machine cannot hold the plan, in words with the numbers; None when it can."""
    if need.total <= machine.available:
        return None
    return (
        f"The engine needs about {need.describe()} of host RAM, and this machine has "
        f"{machine.available / GIB:.1f} GiB available ({machine.total / GIB:.1f} GiB in all). "
        "Close other programs, add RAM, or use a card with more memory (more blocks stay on the GPU)."
    )
